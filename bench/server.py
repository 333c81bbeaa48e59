"""The local server with the real model: streaming overhead, batching, and concurrent streams.

Runs SmolLM2-135M (llama engine) in a ``LocalServer`` and, for comparison, a second llama engine called
directly in this process. Variants run interleaved round by round (A, B, A, B, ...) so that machine
noise hits all of them alike; the report gives medians and their ratios. Reads no environment variables.

1. tokens/s streamed through the server with the openai client vs the engine called directly on the same
   prompt (goal: >= 0.9x);
2. a batch of 8 prompts in one request vs the same 8 prompts as 8 sequential requests (goal: <= 0.6x;
   the prompts are new at each call, so the prompt cache serves neither);
3. 8 concurrent streams: do all progress together, and the worst time to first token vs one stream alone.
4. the synthetic engine's requests/s at concurrency 64, with and without ``Idempotency-Key``: this tree vs
   a baseline revision (default: the last one whose ledger writes ran on the event loop), each server
   in its own process on a ledger file, the baseline from a ``git worktree`` of that revision.
5. structured outputs: tokens/s of a schema-constrained chat answer vs the same prompt unconstrained
   (both greedy, both held to the same length with ``min_tokens``; goal >= 0.8x), and the latency of a
   request whose large schema is new (compiled on the request) vs the same schema again (cached).

    .venv/bin/python bench/server.py [--rounds 5] [--threads N] [--baseline REV]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai

from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer
from ncompass_openai.server.engines._base import GenerationControl, SamplingParams, SequenceRequest
from ncompass_openai.server.engines.llama import LlamaEngine

KEY = "nc-bench-key-0123456789"
RESULTS = Path(__file__).parent / "results" / "server.txt"
ROOT = Path(__file__).resolve().parents[1]
# The last revision whose ledger writes ran on the event loop (issue: "no blocking SQLite on the loop").
LEDGER_BASELINE = "30cb203"
STREAM_PROMPT = "<|im_start|>user\nWrite a long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"
QUESTIONS = (
    "Describe the sea.",
    "Explain how rain forms.",
    "Write a poem about trees.",
    "What is a computer?",
    "Tell me about the moon.",
    "Describe a busy city.",
    "Why do birds sing?",
    "Explain gravity to a child.",
)
BATCH_PROMPTS = [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in QUESTIONS]


def engine_direct(engine: LlamaEngine, prompt: str, max_tokens: int) -> tuple[float, int]:
    """(seconds, tokens) for one greedy generation called on the engine itself."""
    # One cache group, as the server gives a tenant: both sides reuse the repeated prompt's cache.
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    queue = [SequenceRequest(0, prompt, params, cache_group="bench")]

    def take(free: int) -> list[SequenceRequest]:
        taken = queue[:free]
        del queue[:free]
        return taken

    start = time.perf_counter()
    tokens = sum(1 for _ in engine.generate(take, GenerationControl()))
    return time.perf_counter() - start, tokens


def server_stream(client: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    """(seconds, tokens) for the same generation streamed through the server."""
    start = time.perf_counter()
    stream = client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens = 0
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return time.perf_counter() - start, tokens


_calls = itertools.count()


def fresh_prompts() -> list[str]:
    """The 8 prompts, tagged anew at each call: no call finds them in the prompt cache (section 2 measures
    batching, and an 8-prompt batch and 8 sequential requests would not gain alike from it)."""
    tag = next(_calls)
    return [p.replace("user\n", f"user\n(#{tag}) ", 1) for p in BATCH_PROMPTS]


def batch_request(client: openai.OpenAI, model: str, max_tokens: int) -> tuple[float, int]:
    prompts = fresh_prompts()
    start = time.perf_counter()
    result = client.completions.create(model=model, prompt=prompts, max_tokens=max_tokens, temperature=0)
    assert result.usage is not None
    return time.perf_counter() - start, result.usage.completion_tokens


def sequential_requests(client: openai.OpenAI, model: str, max_tokens: int) -> tuple[float, int]:
    prompts = fresh_prompts()
    start = time.perf_counter()
    tokens = 0
    for prompt in prompts:
        result = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
        assert result.usage is not None
        tokens += result.usage.completion_tokens
    return time.perf_counter() - start, tokens


def concurrent_streams(client: openai.OpenAI, model: str, count: int, max_tokens: int) -> dict[str, float]:
    """Start ``count`` streams at once; time to first token of each, and whether all ran together."""
    barrier = threading.Barrier(count)
    first: list[float] = [0.0] * count
    done: list[float] = [0.0] * count
    pieces: list[int] = [0] * count
    t0 = 0.0

    def run(i: int) -> None:
        nonlocal t0
        barrier.wait()
        if i == 0:
            t0 = time.perf_counter()
        start = time.perf_counter()
        stream = client.completions.create(
            model=model, prompt=BATCH_PROMPTS[i % len(BATCH_PROMPTS)], max_tokens=max_tokens, stream=True
        )
        for chunk in stream:
            if chunk.choices and not first[i]:
                first[i] = time.perf_counter() - start
            pieces[i] += 1
        done[i] = time.perf_counter() - start

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "max_ttft": max(first),
        "median_ttft": statistics.median(first),
        "all_progressed": float(all(p > 0 for p in pieces) and max(first) < min(done)),
        "wall": max(done),
    }


LONG_SCHEMA = {
    "type": "array",
    "minItems": 40,
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "age": {"type": "integer", "minimum": 0, "maximum": 99},
            "city": {"type": "string", "maxLength": 30},
        },
        "required": ["name", "age", "city"],
        "additionalProperties": False,
    },
}
JSON_MESSAGES = [{"role": "user", "content": "List people with their name, age and city, as JSON."}]


def chat_tokens(client: openai.OpenAI, model: str, max_tokens: int, schema: Any | None) -> tuple[float, int]:
    """(seconds, tokens) of one greedy chat answer of exactly ``max_tokens`` tokens, constrained or not."""
    fields: dict[str, Any] = {"extra_body": {"min_tokens": max_tokens}}
    if schema is not None:
        fields["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "people", "schema": schema},
        }
    start = time.perf_counter()
    answer = client.chat.completions.create(
        model=model,
        messages=JSON_MESSAGES,
        max_tokens=max_tokens,
        temperature=0,
        **fields,  # type: ignore[arg-type]
    )
    assert answer.usage is not None
    return time.perf_counter() - start, answer.usage.completion_tokens


def large_schema(tag: str) -> dict[str, Any]:
    """A schema of 80 properties (enums, patterns, ranges, nested objects); ``tag`` makes it new."""
    properties: dict[str, Any] = {}
    for i in range(80):
        kind = i % 4
        if kind == 0:
            properties[f"{tag}_choice_{i}"] = {"enum": [f"option_{i}_{k}" for k in range(6)]}
        elif kind == 1:
            properties[f"{tag}_code_{i}"] = {
                "type": "string",
                "pattern": f"^[A-Z]{{2}}-[0-9]{{{i % 5 + 2}}}$",
            }
        elif kind == 2:
            properties[f"{tag}_count_{i}"] = {"type": "integer", "minimum": i, "maximum": 1000 + i}
        else:
            properties[f"{tag}_item_{i}"] = {
                "type": "object",
                "properties": {"label": {"type": "string", "maxLength": 20}, "ok": {"type": "boolean"}},
                "required": ["label", "ok"],
                "additionalProperties": False,
            }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def schema_request(client: openai.OpenAI, model: str, schema: dict[str, Any]) -> float:
    """Seconds of a one-token request under ``schema`` (what compiling it adds shows up here)."""
    start = time.perf_counter()
    client.chat.completions.create(
        model=model,
        messages=JSON_MESSAGES,  # type: ignore[arg-type]
        max_tokens=1,
        response_format={"type": "json_schema", "json_schema": {"name": "big", "schema": schema}},
    )
    return time.perf_counter() - start


def structured_section(
    report: Callable[[str], None], client: openai.OpenAI, model: str, rounds: int, tokens: int
) -> None:
    schema_request(client, model, large_schema("warmup"))  # the vocabulary's grammar tokenizer, built once
    runs = interleave(
        rounds,
        {
            "unconstrained": lambda: chat_tokens(client, model, tokens, None),
            "schema-constrained": lambda: chat_tokens(client, model, tokens, LONG_SCHEMA),
        },
    )
    (_, free_tps), (_, bound_tps) = (median_of(v) for v in runs.values())
    report(f"5. structured outputs, chat, {tokens} tokens greedy (min_tokens holds both to that length)")
    report(f"   {'variant':<28}{'median tok/s':>14}")
    report(f"   {'unconstrained':<28}{free_tps:>14.1f}")
    report(f"   {'schema-constrained':<28}{bound_tps:>14.1f}")
    report(f"   ratio constrained / unconstrained: {bound_tps / free_tps:.2f}x  (goal >= 0.8x)")
    new, cached = [], []
    for k in range(rounds):
        schema = large_schema(f"r{k}_{uuid.uuid4().hex[:6]}")
        new.append(schema_request(client, model, schema))
        cached.append(schema_request(client, model, schema))
    size = len(json.dumps(large_schema("x")))
    report(f"   a large schema ({size // 1024} KiB, 80 properties), one-token request, median of {rounds}:")
    first, again = statistics.median(new), statistics.median(cached)
    report(
        f"   new (compiled on the request) {first * 1e3:.0f} ms, cached {again * 1e3:.0f} ms: "
        f"{first / again:.1f}x"
    )


def median_of(runs: list[tuple[float, int]]) -> tuple[float, float]:
    """Median seconds and median tokens/s."""
    return statistics.median(s for s, _ in runs), statistics.median(n / s for s, n in runs)


def interleave(
    rounds: int, variants: dict[str, Callable[[], tuple[float, int]]]
) -> dict[str, list[tuple[float, int]]]:
    out: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            out[name].append(fn())
    return out


@contextmanager
def server_process(source: Path, db: Path) -> Iterator[str]:
    """``python -m ncompass_openai.server`` (synthetic engine) importing the package from ``source``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env["PYTHONPATH"] = str(source)
    cmd = [sys.executable, "-m", "ncompass_openai.server", "--engine", "synthetic", "--port", "0"]
    cmd += ["--db", str(db), "--api-key", KEY, "--log-level", "warning", "--max-queue-per-key", "128"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(r"listening on (http://\S+/v1)", line)
            if found:
                yield found.group(1)
                break
        else:
            raise RuntimeError("the server did not start")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def load(base_url: str, requests: int, concurrency: int, idempotent: bool) -> float:
    """Requests/s of ``requests`` one-token completions sent ``concurrency`` at a time (raw httpx)."""
    body = b'{"model":"synthetic","prompt":"hi","max_tokens":1}'
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
        await http.post("/sessions", content=b"{}")  # an active session: every request renews its lease
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                extra = {"Idempotency-Key": uuid.uuid4().hex} if idempotent else {}
                answer = await http.post("/completions", content=body, headers=extra)
                assert answer.status_code == 200, answer.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def ledger_section(report: Callable[[str], None], rounds: int, baseline: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), baseline],
            check=True,
            capture_output=True,
        )
        try:
            results: dict[str, list[float]] = {}
            with (
                server_process(worktree, Path(tmp) / "before.sqlite3") as before,
                server_process(ROOT, Path(tmp) / "after.sqlite3") as after,
            ):
                variants = {
                    f"before ({baseline}), no key": (before, False),
                    "after, no key": (after, False),
                    f"before ({baseline}), Idempotency-Key": (before, True),
                    "after, Idempotency-Key": (after, True),
                }
                for url, _ in {v[0]: v for v in variants.values()}.values():
                    asyncio.run(load(url, 200, 64, True))  # warm-up
                for _ in range(rounds):
                    for name, (url, idempotent) in variants.items():
                        results.setdefault(name, []).append(asyncio.run(load(url, 1500, 64, idempotent)))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False
            )
    med = {name: statistics.median(v) for name, v in results.items()}
    names = list(med)
    report("4. ledger writes off the event loop: synthetic engine, 1-token completions, concurrency 64")
    report(f"   {'variant':<40}{'median req/s':>14}")
    for name in names:
        report(f"   {name:<40}{med[name]:>14.0f}")
    report(f"   ratio after / before, no key: {med[names[1]] / med[names[0]]:.2f}x")
    report(f"   ratio after / before, Idempotency-Key: {med[names[3]] / med[names[2]]:.2f}x")
    report(f"   cost of the idempotency record, after: {1 - med[names[3]] / med[names[1]]:.0%} of req/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: the engine's)")
    parser.add_argument("--stream-tokens", type=int, default=96)
    parser.add_argument("--batch-tokens", type=int, default=32)
    parser.add_argument("--baseline", default=LEDGER_BASELINE, help="revision to compare the ledger with")
    parser.add_argument("--only-ledger", action="store_true", help="run section 4 only")
    args = parser.parse_args()

    lines: list[str] = []

    def report(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    if args.only_ledger:
        ledger_section(report, args.rounds, args.baseline)
        return

    direct = LlamaEngine(threads=args.threads)
    direct.load()
    with LocalServer(engine="llama", api_keys=[KEY], threads=args.threads) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        # Warm up both paths once (page cache, first-call allocations).
        engine_direct(direct, STREAM_PROMPT, 8)
        server_stream(client, model, STREAM_PROMPT, 8)

        report(
            f"bench/server.py: {model}, llama engine, {direct.threads} threads "
            f"({direct.decode_threads} for one-token steps), "
            f"{args.rounds} rounds interleaved"
        )
        report(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        report()

        streamed = interleave(
            args.rounds,
            {
                "engine called directly": lambda: engine_direct(direct, STREAM_PROMPT, args.stream_tokens),
                "streamed through server": lambda: server_stream(
                    client, model, STREAM_PROMPT, args.stream_tokens
                ),
            },
        )
        (_, direct_tps), (_, server_tps) = (median_of(v) for v in streamed.values())
        report(f"1. streaming, {args.stream_tokens} tokens greedy, one prompt")
        report(f"   {'variant':<28}{'median tok/s':>14}")
        report(f"   {'engine called directly':<28}{direct_tps:>14.1f}")
        report(f"   {'streamed through server':<28}{server_tps:>14.1f}")
        report(f"   ratio server / direct: {server_tps / direct_tps:.2f}x  (goal >= 0.9x)")
        report()

        batched = interleave(
            args.rounds,
            {
                "1 request, 8 prompts": lambda: batch_request(client, model, args.batch_tokens),
                "8 sequential requests": lambda: sequential_requests(client, model, args.batch_tokens),
            },
        )
        (batch_s, _), (seq_s, _) = (median_of(v) for v in batched.values())
        batch_tokens = statistics.median(n for _, n in batched["1 request, 8 prompts"])
        seq_tokens = statistics.median(n for _, n in batched["8 sequential requests"])
        report(f"2. batching, 8 prompts x {args.batch_tokens} tokens greedy")
        report(f"   {'variant':<28}{'median s':>10}{'tokens':>8}")
        report(f"   {'1 request, 8 prompts':<28}{batch_s:>10.2f}{batch_tokens:>8.0f}")
        report(f"   {'8 sequential requests':<28}{seq_s:>10.2f}{seq_tokens:>8.0f}")
        report(f"   ratio batch / sequential wall time: {batch_s / seq_s:.2f}x  (goal <= 0.6x)")
        report()

        single = [server_stream(client, model, BATCH_PROMPTS[0], 1)[0] for _ in range(args.rounds)]
        conc = [concurrent_streams(client, model, 8, args.batch_tokens) for _ in range(args.rounds)]
        max_ttft = statistics.median(c["max_ttft"] for c in conc)
        med_ttft = statistics.median(c["median_ttft"] for c in conc)
        single_ttft = statistics.median(single)
        progressed = all(c["all_progressed"] for c in conc)
        report(f"3. 8 concurrent streams x {args.batch_tokens} tokens")
        report(f"   all 8 streamed side by side (every first token before any stream ended): {progressed}")
        report(f"   time to first token: median {med_ttft:.2f} s, max {max_ttft:.2f} s")
        report(f"   one stream alone: {single_ttft:.2f} s; max TTFT / alone: {max_ttft / single_ttft:.1f}x")
        report(f"   wall time of the 8 streams: {statistics.median(c['wall'] for c in conc):.2f} s")
        report()
        structured_section(report, client, model, args.rounds, args.stream_tokens)
    direct.unload()
    report()
    ledger_section(report, args.rounds, args.baseline)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
