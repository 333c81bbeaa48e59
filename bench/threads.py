"""The llama engine's thread count on a busy machine: which default to ship.

llama.cpp's threads spin while they wait for each other, so a thread that another process preempts
stalls every step. For 0 to 4 competing processes (each a busy loop, as a neighbour's job would be), the
engine is called directly with each thread setting and timed on one greedy stream of 64 tokens
(tokens/s after the first) and on 8 prompts x 32 tokens decoded together (wall seconds). Settings run in
interleaved rounds; the report gives medians, and each setting against the default as ratios. ::

    .venv/bin/python bench/threads.py [--rounds 3] [--loads 0,1,2,4]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ncompass_openai.server.engines._base import GenerationControl, SamplingParams, SequenceRequest
from ncompass_openai.server.engines.llama import LlamaEngine

CORES = os.cpu_count() or 1
QUESTIONS = ("What is a GPU?", "Why is the sky blue?", "Name three fruits.", "What is rain?")
_calls = itertools.count()


def _prompts(count: int) -> list[str]:
    tag = next(_calls)  # a new tag at each call: nothing comes from the prompt cache
    return [
        f"<|im_start|>user\n(#{tag}.{i}) {QUESTIONS[i % len(QUESTIONS)]}<|im_end|>\n<|im_start|>assistant\n"
        for i in range(count)
    ]


def _generate(engine: LlamaEngine, prompts: list[str], max_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first token, seconds in all, tokens)."""
    params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens, temperature=0)
    queue = [SequenceRequest(i, p, params) for i, p in enumerate(prompts)]

    def take(free: int) -> list[SequenceRequest]:
        taken = queue[:free]
        del queue[:free]
        return taken

    start = time.perf_counter()
    first = None
    tokens = 0
    for _ in engine.generate(take, GenerationControl()):
        tokens += 1
        if first is None:
            first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start, tokens


@contextmanager
def busy(count: int) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5 if count else 0)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loads", default="0,1,2,4", help="numbers of competing processes")
    args = parser.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    settings: dict[str, dict[str, Any]] = {
        "default": {},
        "fixed default": {"adapt_threads": False},
        **{f"threads={n}": {"threads": n} for n in range(1, CORES + 1)},
    }
    engines = {}
    for name, options in settings.items():
        engine = LlamaEngine(**options)
        engine.load()
        engines[name] = engine
    print(
        "bench/threads.py: SmolLM2-135M-Instruct, llama engine called directly, "
        f"{CORES} cores, {args.rounds} rounds"
    )
    print(f"machine: load average {os.getloadavg()[0]:.1f} at start")
    print(
        "fixed default: every core for prompts and batches, one fewer for one-token steps "
        f"({engines['default'].threads} / {engines['default'].decode_threads} here); default: the same, "
        "less the cores other processes keep busy (engines/_cpu_share.py)"
    )
    print()
    for load in loads:
        stream: dict[str, list[float]] = {name: [] for name in settings}
        batch: dict[str, list[float]] = {name: [] for name in settings}
        with busy(load):
            for number in range(args.rounds):
                order = list(settings) if number % 2 == 0 else list(reversed(settings))
                for name in order:
                    first, whole, tokens = _generate(engines[name], _prompts(1), 64)
                    stream[name].append((tokens - 1) / (whole - first))
                    _, wall, _ = _generate(engines[name], _prompts(8), 32)
                    batch[name].append(wall)
        print(f"{load} competing process(es)")
        print(
            f"   {'setting':<12} {'stream tok/s':>13} {'8x32 wall s':>12} "
            f"{'stream vs default':>18} {'8x32 vs default':>16}"
        )
        base_s, base_b = statistics.median(stream["default"]), statistics.median(batch["default"])
        for name in settings:
            s, b = statistics.median(stream[name]), statistics.median(batch[name])
            print(f"   {name:<12} {s:>13.1f} {b:>12.2f} {s / base_s:>17.2f}x {b / base_b:>15.2f}x")
        print()
    for engine in engines.values():
        engine.unload()


if __name__ == "__main__":
    main()
