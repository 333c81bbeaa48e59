"""Which library enforces ``response_format`` schemas: llguidance vs llama.cpp's grammars vs outlines-core.

The schema corpus is the tests' (``tests/data/json_schemas.json``); the probes below use keywords that a
library may not enforce. For each library:

1. coverage: which corpus schemas and probes it compiles, and which it refuses (a refusal is the right
   answer for a keyword it cannot enforce; compiling one and ignoring it is the flaw to avoid);
2. compile time of each corpus schema for SmolLM2's 49k-token vocabulary (median and worst);
3. llguidance, the choice: one generation per corpus schema (seed 0) in this project's llama engine,
   the share that ends with ``stop`` and validates, and decode tokens/s (first token to last, so the
   prompt's prefill is left out) constrained vs unconstrained on the same prompts. llama.cpp's grammar
   sampler is not run: through llama-cpp-python's ``Llama`` this corpus ended the process with SIGSEGV
   (after the grammar it could not parse), and 1-2 already rule it out (keywords compiled, not
   enforced). outlines-core is compile only: its token-string conventions for a byte-level BPE
   vocabulary are not this project's to reproduce.

    .venv/bin/python bench/constraints.py [--skip-generation]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

from ncompass_openai.server.engines._base import GenerationControl, SamplingParams, SequenceRequest
from ncompass_openai.server.engines.llama import LlamaEngine
from ncompass_openai.server.runtime._chat_template import render_chat_template

ROOT = Path(__file__).resolve().parents[1]
CORPUS = json.loads((ROOT / "tests" / "data" / "json_schemas.json").read_text())
# Keywords that constrain values and that some libraries do not implement.
PROBES: dict[str, dict[str, Any]] = {
    "multipleOf": {"type": "integer", "multipleOf": 7},
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "dependentRequired": {"type": "object", "dependentRequired": {"a": ["b"]}},
    "patternProperties": {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
    "not": {"not": {"type": "string"}},
    "if/then": {"if": {"type": "integer"}, "then": {"minimum": 3}},
    "minProperties": {"type": "object", "minProperties": 2},
    "format: email": {"type": "string", "format": "email"},
    "format: unknown": {"type": "string", "format": "no-such-format"},
}
MAX_TOKENS = 300
COMPILE_TIMEOUT = 20.0  # seconds one schema may take to compile before it counts as not compiled


def _median_max(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:7.1f} ms   worst {max(values) * 1e3:7.1f} ms"


# ------------------------------------------------------------------ the three libraries' compilers
def llguidance_compiler(engine: LlamaEngine) -> Callable[[dict[str, Any]], object]:
    import llguidance
    from llguidance.llamacpp import lltokenizer_from_vocab

    tokenizer = lltokenizer_from_vocab(engine._vocab)

    def compile_(schema: dict[str, Any]) -> object:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False}
        )
        matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    return compile_


def llama_cpp_compiler(engine: LlamaEngine) -> Callable[[dict[str, Any]], object]:
    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    def compile_(schema: dict[str, Any]) -> object:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
        sampler = llama_cpp.llama_sampler_init_grammar(engine._vocab, gbnf.encode(), b"root")
        if not sampler:
            raise ValueError("llama.cpp could not parse the grammar")
        llama_cpp.llama_sampler_free(sampler)
        return gbnf

    return compile_


def outlines_compiler(engine: LlamaEngine) -> Callable[[dict[str, Any]], object]:
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema

    eos = engine._end_tokens[0]
    tokens: dict[str, list[int]] = {}
    for token in range(engine._n_vocab):
        if token in engine._end_tokens:
            continue
        text = engine._model.token_get_text(token)
        tokens.setdefault(text, []).append(token)
    vocabulary = outlines_core.Vocabulary(eos, tokens)

    def compile_(schema: dict[str, Any]) -> object:
        return outlines_core.Index(build_regex_from_schema(json.dumps(schema)), vocabulary)

    return compile_


def _in_child(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()``'s result computed in a forked child, or a string saying why there is none.

    A child, because a compile that runs away (outlines-core's index for some schemas) cannot be stopped
    inside this process, and a grammar that crashes llama.cpp's sampler would end it.
    """
    parent, child = multiprocessing.get_context("fork").Pipe()

    def run() -> None:
        try:
            child.send(fn())
        except Exception as exc:  # each library raises its own types
            child.send(f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}")

    process = multiprocessing.get_context("fork").Process(target=run)
    process.start()
    result: Any = f"no result in {timeout:.0f} s"
    if parent.poll(timeout):
        result = parent.recv()
    process.join(1)
    if process.exitcode is not None and process.exitcode < 0 and isinstance(result, str):
        result = f"the process crashed (signal {-process.exitcode})"
    process.kill()
    process.join()
    return result


def _timed(compile_: Callable[[dict[str, Any]], object], schema: dict[str, Any]) -> float | str:
    """Seconds to compile ``schema``, or why it did not compile (an error, a timeout)."""

    def run() -> float:
        started = time.perf_counter()
        compile_(schema)
        return time.perf_counter() - started

    result: float | str = _in_child(run, COMPILE_TIMEOUT)
    return result


def coverage(name: str, compile_: Callable[[dict[str, Any]], object]) -> None:
    times, failed = [], []
    for item in CORPUS:
        result = _timed(compile_, item["schema"])
        if isinstance(result, str):
            failed.append(f"{item['name']} ({result})")
        else:
            times.append(result)
    probes = []
    for probe, schema in PROBES.items():
        result = _timed(compile_, schema)
        probes.append(f"{probe}: " + ("compiled" if not isinstance(result, str) else f"refused ({result})"))
    print(f"{name}")
    print(f"  corpus compiled: {len(times)}/{len(CORPUS)}   compile {_median_max(times) if times else '-'}")
    for line in failed:
        print(f"    not compiled: {line}")
    for line in probes:
        print(f"    probe {line}")


# ------------------------------------------------------------------------------- generation
def _check(text: str, finish: str | None, schema: dict[str, Any]) -> bool:
    if finish != "stop":
        return False
    try:
        jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def _prompt(engine: LlamaEngine, item: dict[str, Any]) -> str:
    messages = [{"role": "user", "content": item["prompt"] + " Answer in JSON."}]
    return render_chat_template(str(engine.chat_template()), messages, special_tokens=engine.special_tokens())


def engine_run(engine: LlamaEngine, constrained: bool) -> tuple[int, int, float]:
    """(valid answers, tokens after the first, seconds from the first token to the last): decode speed,
    without the prompt's prefill, which a short constrained answer would otherwise be charged more of."""
    import llguidance

    ok = tokens = 0
    took = 0.0
    for item in CORPUS:
        grammar = None
        if constrained:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                item["schema"], defaults={"whitespace_flexible": False}
            )
        params = SamplingParams(max_tokens=MAX_TOKENS, seed=0, grammar=grammar)
        queue = [SequenceRequest(0, _prompt(engine, item), params)]
        parts: list[str] = []
        finish = None
        first = last = 0.0
        for token in engine.generate(lambda n, q=queue: [q.pop()] if q else [], GenerationControl()):
            last = time.perf_counter()
            first = first or last
            parts.append(token.text)
            finish = token.finish_reason or finish
        took += last - first
        tokens += len(parts) - 1
        ok += _check("".join(parts), finish, item["schema"])
    return ok, tokens, took


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args(argv)
    engine = LlamaEngine(max_batch=1)
    engine.load()
    print(f"corpus: {len(CORPUS)} schemas; probes: {len(PROBES)}; vocabulary: {engine._n_vocab} tokens\n")
    print("1-2. coverage and compile time (grammar built for the model's vocabulary)")
    for name, make in (
        ("llguidance", llguidance_compiler),
        ("llama.cpp grammar (json_schema_to_gbnf)", llama_cpp_compiler),
        ("outlines-core (regex index)", outlines_compiler),
    ):
        try:
            compile_ = make(engine)
        except ImportError as exc:
            print(f"{name}: not installed ({exc.name})")
            continue
        coverage(name, compile_)
    if args.skip_generation:
        return 0

    print(f"\n3. one generation per corpus schema (seed 0, max_tokens {MAX_TOKENS}), one sequence at a time")
    for name, run in (("llguidance in the llama engine", lambda c: engine_run(engine, c)),):
        ok, tokens, took = run(True)
        _, free_tokens, free_took = run(False)
        ratio = (tokens / took) / (free_tokens / free_took)
        print(
            f"  {name:38} valid+stop {ok:2}/{len(CORPUS)}   decode: constrained {tokens / took:6.1f} tok/s, "
            f"unconstrained {free_tokens / free_took:6.1f} tok/s, ratio {ratio:.2f}x",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
