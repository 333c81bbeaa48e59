"""The openai engine (``ncompass serve --engine openai``): what the gateway costs, and what replicas buy.

Every server is its own process on this machine; the client, the gateway and the upstreams share its
cores. Variants run in interleaved rounds, the order reversed every other round, and the report gives
medians and ratios side by side:

1. real model: one ``ncompass serve --engine llama`` upstream, asked directly and through a gateway in
   front of it (the same upstream, so its prompt cache serves both alike):
   - 8 concurrent chats x 32 tokens, greedy: wall time through the gateway / directly (goal <= 1.05x);
   - one stream of 128 tokens: tokens/s after the first, through the gateway / directly (goal >= 0.97x);
2. synthetic upstream, unpaced: the p50 and p90 milliseconds the gateway adds to a 16-token request,
   sequential (reported);
3. synthetic upstreams paced at 50 tokens/s per sequence, 4 sequences per batch: 32 concurrent
   requests x 32 tokens through a gateway with 2 replicas vs one with 1 (goal >= 1.8x the throughput).

Reads no environment variables; writes the report to stdout and to bench/results/gateway.txt.

    python bench/gateway.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
from client import KEY, Report, free_port  # bench/client.py: the tenant key
from engine import STORY, running_process, wait_until_running  # bench/engine.py: the same processes

from ncompass_openai._compat import httpx
from server import QUESTIONS  # bench/server.py: the same 8 chats

RESULT = Path(__file__).resolve().parent / "results" / "gateway.txt"
UPSTREAM_KEY = "nc-bench-gateway-upstream-key-1"
PACE = 50.0  # tokens/s per sequence of a paced synthetic upstream
PACED_BATCH = 4


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}


def _serve(stack: ExitStack, tmp: Path, name: str, *args: str, key: str) -> str:
    """``python -m ncompass_openai.server ARGS`` on a free port; its base URL once its model runs."""
    port = free_port()
    cmd = [sys.executable, "-m", "ncompass_openai.server", "--port", str(port), "--api-key", key]
    cmd += ["--db", ":memory:", "--log-level", "warning", "--max-queue-per-key", "64", *args]
    url: str = stack.enter_context(running_process(name, cmd, port, tmp / f"{name}.log", _env(), key))
    wait_until_running(url, key)
    return url


def _gateway(stack: ExitStack, tmp: Path, name: str, upstreams: list[str]) -> str:
    args = ["--engine", "openai", "--upstream-api-key", UPSTREAM_KEY, "--health-interval", "2"]
    for url in upstreams:
        args += ["--upstream", url]
    return _serve(stack, tmp, name, *args, key=KEY)


def _client(url: str, key: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=httpx.Limits(max_connections=128))
    return openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, http_client=http)


# ---------------------------------------------------------------------------------------- workloads
async def _chat(client: openai.AsyncOpenAI, model: str, content: str, tokens: int) -> int:
    answer = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=tokens,
        temperature=0,  # type: ignore[arg-type]
    )
    return answer.usage.completion_tokens if answer.usage else 0


_calls = itertools.count()


async def concurrent(client: openai.AsyncOpenAI, model: str, count: int, tokens: int) -> dict[str, float]:
    """``count`` chats at once, each prompt new (no variant reuses another's prompt cache)."""
    call = next(_calls)
    prompts = [f"{QUESTIONS[i % len(QUESTIONS)]} (question {call}.{i})" for i in range(count)]
    started = time.perf_counter()
    done = await asyncio.gather(*(_chat(client, model, p, tokens) for p in prompts))
    wall = time.perf_counter() - started
    return {"wall": wall, "tok_s": sum(done) / wall, "tokens": float(sum(done))}


async def one_stream(client: openai.AsyncOpenAI, model: str, tokens: int) -> dict[str, float]:
    first, pieces = 0.0, 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": STORY}],
        max_tokens=tokens,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if not first:
                first = time.perf_counter()
    return {"tok_s": (pieces - 1) / (time.perf_counter() - first), "tokens": float(pieces)}


async def latency(client: openai.AsyncOpenAI, model: str, count: int) -> list[float]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        await _chat(client, model, f"ping {i}", 16)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def _rounds(
    variants: dict[str, Callable[[], Awaitable[Any]]], rounds: int, say: Callable[[str], None], tag: str
) -> dict[str, list[Any]]:
    names = list(variants)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            results[name].append(await variants[name]())
        say(f"   {tag}: round {number + 1}/{rounds} done")
    return results


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# ------------------------------------------------------------------------------------------ sections
async def real_model(
    tmp: Path, rounds: int, say: Callable[[str], None], progress: Callable[[str], None]
) -> dict[str, float]:
    with ExitStack() as stack:
        upstream = _serve(
            stack, tmp, "llama-upstream", "--engine", "llama", "--threads", "2", key=UPSTREAM_KEY
        )
        gateway = _gateway(stack, tmp, "gateway-llama", [upstream])
        direct, through = _client(upstream, UPSTREAM_KEY), _client(gateway, KEY)
        model = (await direct.models.list()).data[0].id
        for c in (direct, through):
            await concurrent(c, model, 2, 4)  # warm-up
        chats = await _rounds(
            {
                "direct": lambda: concurrent(direct, model, 8, 32),
                "gateway": lambda: concurrent(through, model, 8, 32),
            },
            rounds,
            progress,
            "8 chats",
        )
        streams = await _rounds(
            {
                "direct": lambda: one_stream(direct, model, 128),
                "gateway": lambda: one_stream(through, model, 128),
            },
            rounds * 3,
            progress,
            "one stream",
        )
        for c in (direct, through):
            await c.close()
    say(f"1. real model ({model}, llama engine, 2 threads): through the gateway vs directly, {rounds} rounds")
    say(f"   {'':<10}{'8x32 wall s':>12}{'tok/s':>9}{'stream tok/s':>14}")
    for name in ("direct", "gateway"):
        say(
            f"   {name:<10}{_median(chats[name], 'wall'):>12.2f}{_median(chats[name], 'tok_s'):>9.1f}"
            f"{_median(streams[name], 'tok_s'):>14.1f}"
        )
    wall = _median(chats["gateway"], "wall") / _median(chats["direct"], "wall")
    rate = _median(streams["gateway"], "tok_s") / _median(streams["direct"], "tok_s")
    say(f"   gateway / direct: 8x32 wall {wall:.3f}x, one stream tok/s {rate:.3f}x")
    return {"wall": wall, "rate": rate}


async def added_latency(
    tmp: Path, rounds: int, say: Callable[[str], None], progress: Callable[[str], None]
) -> None:
    with ExitStack() as stack:
        upstream = _serve(stack, tmp, "synthetic-upstream", "--engine", "synthetic", key=UPSTREAM_KEY)
        gateway = _gateway(stack, tmp, "gateway-synthetic", [upstream])
        direct, through = _client(upstream, UPSTREAM_KEY), _client(gateway, KEY)
        for c in (direct, through):
            await latency(c, "synthetic", 20)  # warm-up
        runs = await _rounds(
            {
                "direct": lambda: latency(direct, "synthetic", 100),
                "gateway": lambda: latency(through, "synthetic", 100),
            },
            rounds,
            progress,
            "latency",
        )
        for c in (direct, through):
            await c.close()
    direct_ms = [t for run in runs["direct"] for t in run]
    gateway_ms = [t for run in runs["gateway"] for t in run]
    p50 = statistics.median(gateway_ms) - statistics.median(direct_ms)
    p90 = statistics.quantiles(gateway_ms, n=10)[-1] - statistics.quantiles(direct_ms, n=10)[-1]
    say(f"2. synthetic upstream, 16-token chats one after another ({len(direct_ms)} each)")
    say(
        f"   direct p50 {statistics.median(direct_ms):.2f} ms, "
        f"gateway p50 {statistics.median(gateway_ms):.2f} ms"
    )
    say(
        f"   the gateway adds {p50:.2f} ms at p50, {p90:.2f} ms at p90 "
        "(client, gateway and upstream share 2 cores)"
    )


async def replicas(
    tmp: Path, rounds: int, say: Callable[[str], None], progress: Callable[[str], None]
) -> float:
    with ExitStack() as stack:
        paced = [
            "--engine",
            "synthetic",
            "--synthetic-token-rate",
            str(PACE),
            "--max-batch",
            str(PACED_BATCH),
        ]
        ups = [_serve(stack, tmp, f"paced-{i}", *paced, key=UPSTREAM_KEY) for i in range(3)]
        one = _client(_gateway(stack, tmp, "gateway-1", ups[:1]), KEY)
        two = _client(_gateway(stack, tmp, "gateway-2", ups[1:]), KEY)
        for c in (one, two):
            await concurrent(c, "synthetic", 4, 4)
        runs = await _rounds(
            {
                "1 replica": lambda: concurrent(one, "synthetic", 32, 32),
                "2 replicas": lambda: concurrent(two, "synthetic", 32, 32),
            },
            rounds,
            progress,
            "replicas",
        )
        for c in (one, two):
            await c.close()
    say(
        f"3. synthetic upstreams paced at {PACE:g} tok/s per sequence, {PACED_BATCH} per batch: "
        "32 chats x 32 tokens"
    )
    for name in ("1 replica", "2 replicas"):
        say(
            f"   {name:<12} wall {_median(runs[name], 'wall'):6.2f} s, "
            f"{_median(runs[name], 'tok_s'):7.1f} tok/s"
        )
    ratio = _median(runs["2 replicas"], "tok_s") / _median(runs["1 replica"], "tok_s")
    say(f"   2 replicas / 1: {ratio:.2f}x the throughput")
    return ratio


async def run(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    def progress(line: str) -> None:
        print(line, flush=True)

    say(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    say("")
    with tempfile.TemporaryDirectory() as tmp:
        real = await real_model(Path(tmp), args.rounds, say, progress)
        say("")
        await added_latency(Path(tmp), args.rounds, say, progress)
        say("")
        scale = await replicas(Path(tmp), args.rounds, say, progress)
    say("")
    say(
        f"goal 8 concurrent, wall through the gateway <= 1.05x direct: {real['wall']:.3f}x -> "
        + _met(real["wall"] <= 1.05)
    )
    say(
        f"goal one stream, tok/s through the gateway >= 0.97x direct: {real['rate']:.3f}x -> "
        + _met(real["rate"] >= 0.97)
    )
    say(f"goal 2 replicas >= 1.8x the throughput of 1: {scale:.2f}x -> {_met(scale >= 1.8)}")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/gateway.txt")
    args = parser.parse_args()
    say = Report()
    say("bench/gateway.py: ncompass serve --engine openai")
    asyncio.run(run(args, say))
    if not args.no_save:
        say.save(RESULT)


if __name__ == "__main__":
    main()
