"""Batch jobs: billed time and throughput of ``run_batch`` against the ways users write jobs without it.

Three parts, each side by side in one run (the machine is noisy: compare the ratios, not the times):

1. The client at concurrency 64 on the local synthetic server (its own process): requests/s and client
   CPU per request of ``AsyncNCompass`` against ``AsyncOpenAI``, on openai's default httpx transport and
   on its aiohttp one (``openai[aiohttp]``), in interleaved rounds; plus the faster ``AsyncOpenAI``
   sending an ``Idempotency-Key`` (the server then keeps every answer for replay: its cost alone). Goals:
   ``AsyncNCompass`` >= 1.0x ``AsyncOpenAI``; the key's cost <= 5 %.
2. 20,000 requests on the synthetic server: the batch runner against an ``AsyncOpenAI`` +
   ``asyncio.gather`` loop at the same concurrency (64), two runs each in mirrored order. Goals:
   runner >= 2x the loop's requests/s, <= 0.5x its client CPU per request; the runner's RSS growth
   over the run <= 30 MB.
3. The real model (llama engine, SmolLM2-135M, its own process), 256 chat requests x 32 tokens: the
   0.0.x loop (``complete_chat(..., stream=False)`` one by one in one session), ``run_batch`` at each
   fixed concurrency of a sweep, and ``concurrency="auto"``: wall and billed seconds. Goals: auto >=
   0.9x the best fixed level's throughput; auto <= 0.5x the loop's billed seconds.

Reads no environment variables; writes the report to stdout and to bench/results/batch.txt.

    python bench/batch.py [--rounds 5] [--requests 20000] [--real 256] [--skip-real]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
from client import KEY, free_port, synthetic_server  # bench/client.py: the same server setup

from ncompass_openai import AsyncNCompass, NCompass, nCompass
from ncompass_openai._compat import httpx

RESULT = Path(__file__).resolve().parent / "results" / "batch.txt"
CONCURRENCY = 64


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _aiohttp_client() -> Any | None:
    try:
        client = openai.DefaultAioHttpClient()
    except RuntimeError:
        return None  # openai[aiohttp] is not installed
    return client


# -- 1. the client at concurrency 64


async def _burst(call: Callable[[], Awaitable[object]], n: int, concurrency: int) -> tuple[float, float]:
    """Requests/s and client CPU ms per request of ``n`` calls, ``concurrency`` at a time."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await call()

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1000 / n


async def _client_rates(base_url: str, rounds: int, n: int) -> list[str]:
    body = {"prompt": "benchmark", "max_tokens": 4, "temperature": 0}
    async with AsyncNCompass(api_key=KEY, base_url=base_url) as probe:
        await probe.deployment.wait_until_running(timeout=60, poll_interval=0.1)
        model = await probe.resolve_model()
    clients: dict[str, Any] = {
        "AsyncOpenAI": openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=4),
        "AsyncNCompass": AsyncNCompass(api_key=KEY, base_url=base_url),
    }
    transports = ["httpx"]
    if (aio := _aiohttp_client()) is not None and (aio2 := _aiohttp_client()) is not None:
        transports.append("aiohttp")
        clients["AsyncOpenAI aiohttp"] = openai.AsyncOpenAI(
            api_key=KEY, base_url=base_url, max_retries=4, http_client=aio
        )
        clients["AsyncNCompass aiohttp"] = AsyncNCompass(api_key=KEY, base_url=base_url, http_client=aio2)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        name: (lambda c=client: c.completions.create(model=model, **body)) for name, client in clients.items()
    }
    # The fastest client (aiohttp when installed) shows the server's own cost of keeping every answer.
    fastest = "AsyncOpenAI aiohttp" if "aiohttp" in transports else "AsyncOpenAI"
    keyed_name = f"{fastest} + Idempotency-Key"
    calls[keyed_name] = lambda: clients[fastest].completions.create(
        model=model, extra_headers={"Idempotency-Key": uuid.uuid4().hex}, **body
    )
    for call in calls.values():
        await _burst(call, 200, CONCURRENCY)  # warm up pools and caches
    rates: dict[str, list[float]] = {name: [] for name in calls}
    cpus: dict[str, list[float]] = {name: [] for name in calls}
    rng = random.Random(1)
    for _ in range(rounds):
        order = list(calls)
        rng.shuffle(order)
        for name in order:
            rate, cpu = await _burst(calls[name], n, CONCURRENCY)
            rates[name].append(rate)
            cpus[name].append(cpu)
    for client in clients.values():
        await client.close()
    base = statistics.median(rates["AsyncOpenAI"])
    cpu_base = statistics.median(cpus["AsyncOpenAI"])
    lines = [
        f"1. completions.create (max_tokens=4) at concurrency {CONCURRENCY}, "
        f"{rounds} interleaved rounds x {n}",
        f"{'client':<32} {'req/s':>8} {'ratio':>7} {'client CPU ms/req':>18} {'ratio':>7}",
    ]
    for name in calls:
        rate, cpu = statistics.median(rates[name]), statistics.median(cpus[name])
        lines.append(f"{name:<32} {rate:>8.1f} {rate / base:>6.3f}x {cpu:>18.3f} {cpu / cpu_base:>6.3f}x")
    ratio = statistics.median(rates["AsyncNCompass"]) / base
    keyed = statistics.median(rates[keyed_name]) / statistics.median(rates[fastest])
    lines.append(f"goal AsyncNCompass >= 1.0x AsyncOpenAI (httpx): {ratio:.3f}x -> {_verdict(ratio >= 1.0)}")
    if "aiohttp" in transports:
        aio_ratio = statistics.median(rates["AsyncNCompass aiohttp"]) / statistics.median(
            rates["AsyncOpenAI aiohttp"]
        )
        lines.append(
            f"goal AsyncNCompass >= 1.0x AsyncOpenAI (aiohttp): {aio_ratio:.3f}x -> "
            f"{_verdict(aio_ratio >= 1.0)}"
        )
    else:
        lines.append("aiohttp rows: openai[aiohttp] is not installed")
    cost = 1 - keyed
    lines.append(
        f"goal Idempotency-Key costs <= 5 % of the server's throughput ({fastest}): {cost * 100:.1f} % -> "
        f"{_verdict(cost <= 0.05)}"
    )
    return lines


# -- 2. 20,000 requests: the runner against a gather loop


def _items(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {
            "custom_id": f"r{i}",
            "url": "/v1/completions",
            "body": {"prompt": f"p {i}", "max_tokens": 4, "temperature": 0},
        }


async def _gather_loop(base_url: str, model: str, n: int) -> tuple[float, float, float]:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=4)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> Any:
        async with semaphore:
            return await client.completions.create(model=model, prompt=f"p {i}", max_tokens=4, temperature=0)

    rss = _rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    grown = _rss_mb() - rss
    assert len(results) == n
    await client.close()
    return n / wall, used * 1000 / n, grown


async def _runner(base_url: str, n: int, directory: Path, transport: str) -> tuple[float, float, float]:
    # A pool of the caller's is used as given: openai's httpx one keeps the job on httpx.
    http = _aiohttp_client() if transport == "aiohttp" else openai.DefaultAsyncHttpxClient()
    async with AsyncNCompass(api_key=KEY, base_url=base_url, http_client=http) as client:
        rss = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        summary = await client.run_batch(
            _items(n), output=directory / f"out-{uuid.uuid4().hex}.jsonl", concurrency=CONCURRENCY
        )
        wall, used = time.perf_counter() - start, time.process_time() - cpu
        grown = _rss_mb() - rss
    assert summary.ok and summary.succeeded == n, summary
    return n / wall, used * 1000 / n, grown


async def _runner_vs_gather(base_url: str, n: int) -> list[str]:
    async with AsyncNCompass(api_key=KEY, base_url=base_url) as probe:
        model = await probe.resolve_model()
    variants: dict[str, Callable[[Path], Awaitable[tuple[float, float, float]]]] = {
        "AsyncOpenAI + asyncio.gather": lambda _: _gather_loop(base_url, model, n),
        "run_batch (httpx)": lambda directory: _runner(base_url, n, directory, "httpx"),
    }
    if _aiohttp_client() is not None:
        variants["run_batch (aiohttp)"] = lambda directory: _runner(base_url, n, directory, "aiohttp")
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as directory:
        await _runner(base_url, 500, Path(directory), "httpx")  # warm up
        # Two runs each in mirrored order (A B C C B A): a machine that speeds up or slows down during
        # the part shifts every variant's mean alike.
        for name in [*variants, *reversed(variants)]:
            runs[name].append(await variants[name](Path(directory)))
    rows = {
        name: (
            statistics.mean(r[0] for r in done),
            statistics.mean(r[1] for r in done),
            max(r[2] for r in done),
        )
        for name, done in runs.items()
    }
    base_rate, base_cpu, _ = rows["AsyncOpenAI + asyncio.gather"]
    lines = [
        f"2. {n} completions (max_tokens=4) at concurrency {CONCURRENCY}, two runs each in mirrored "
        "order: means (RSS growth: the larger)",
        f"{'client':<32} {'req/s':>8} {'ratio':>7} {'client CPU ms/req':>18} {'ratio':>7} "
        f"{'RSS growth MB':>14}",
    ]
    for name, (rate, cpu, grown) in rows.items():
        lines.append(
            f"{name:<32} {rate:>8.1f} {rate / base_rate:>6.3f}x {cpu:>18.3f} {cpu / base_cpu:>6.3f}x "
            f"{grown:>14.1f}"
        )
    best = max((name for name in rows if name.startswith("run_batch")), key=lambda name: rows[name][0])
    rate, cpu, grown = rows[best]
    lines.append(
        f"goals ({best}): >= 2x req/s: {rate / base_rate:.2f}x -> {_verdict(rate / base_rate >= 2)}; "
        f"<= 0.5x CPU/req: {cpu / base_cpu:.2f}x -> {_verdict(cpu / base_cpu <= 0.5)}; "
        f"RSS growth <= 30 MB: {grown:.1f} MB -> {_verdict(grown <= 30)}"
    )
    return lines


# -- 3. the real model


@contextlib.contextmanager
def _llama_server() -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncompass_openai.server", "--engine", "llama", "--port", str(port),
         "--api-key", KEY, "--db", ":memory:", "--log-level", "warning", "--max-queue-per-key", "64"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the llama server did not start")
            time.sleep(0.2)
        with NCompass(api_key=KEY, base_url=base_url) as client:
            client.deployment.wait_until_running(timeout=300, poll_interval=0.2)
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _chats(n: int) -> list[list[dict[str, str]]]:
    topics = ("the sea", "a city", "a robot", "the moon", "a forest", "a river", "winter", "a library")
    return [
        [{"role": "user", "content": f"Tell a story about {topics[i % len(topics)]}, part {i}."}]
        for i in range(n)
    ]


def _real_model(n: int, levels: tuple[int, ...]) -> list[str]:
    chats = _chats(n)
    params = {"max_tokens": 32, "temperature": 0}
    rows: dict[str, tuple[float, float, int]] = {}  # wall, billed, completion tokens
    with _llama_server() as base_url, tempfile.TemporaryDirectory() as directory:
        legacy = nCompass(api_key=KEY, base_url=base_url)
        start = time.perf_counter()
        session = legacy.start_session()
        for messages in chats:
            legacy.complete_chat(messages, max_tokens=32, temperature=0, stream=False)
        legacy.stop_session()
        wall = time.perf_counter() - start
        stopped = legacy.sessions.retrieve(session.id)
        legacy.close()
        rows["0.0.x loop (one by one)"] = (wall, stopped.billed_seconds, stopped.usage.completion_tokens)
        with NCompass(api_key=KEY, base_url=base_url) as client:
            for level in (*levels, "auto"):
                start = time.perf_counter()
                summary = client.run_batch(
                    chats, output=Path(directory) / f"out-{level}.jsonl", concurrency=level, defaults=params
                )
                assert summary.ok, summary
                rows[f"run_batch concurrency={level}"] = (
                    time.perf_counter() - start,
                    summary.billed_seconds or 0.0,
                    summary.completion_tokens,
                )
                if level == "auto":
                    auto_level = summary.concurrency
    _, loop_billed, _ = rows["0.0.x loop (one by one)"]
    lines = [
        f"3. real model (llama engine, SmolLM2-135M), {n} chat requests x max_tokens=32, greedy; "
        "one run each",
        f"{'way':<32} {'wall s':>8} {'billed s':>9} {'billed ratio':>13} {'tok/s':>7}",
    ]
    for name, (wall, billed, tokens) in rows.items():
        lines.append(
            f"{name:<32} {wall:>8.1f} {billed:>9.1f} {billed / loop_billed:>12.3f}x {tokens / wall:>7.1f}"
        )
    fixed = {
        name: tokens / wall
        for name, (wall, _, tokens) in rows.items()
        if "concurrency=" in name and "auto" not in name
    }
    best_name = max(fixed, key=lambda name: fixed[name])
    auto_wall, auto_billed, auto_tokens = rows["run_batch concurrency=auto"]
    auto_rate = auto_tokens / auto_wall
    lines.append(f"auto settled at {auto_level} in flight")
    lines.append(
        f"goal auto >= 0.9x best fixed ({best_name}) throughput: {auto_rate / fixed[best_name]:.3f}x -> "
        f"{_verdict(auto_rate >= 0.9 * fixed[best_name])}"
    )
    lines.append(
        f"goal auto <= 0.5x the loop's billed seconds: {auto_billed / loop_billed:.3f}x -> "
        f"{_verdict(auto_billed <= 0.5 * loop_billed)} (the engine's batching decides most of this one)"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=1000, help="requests per variant per round (part 1)")
    parser.add_argument("--requests", type=int, default=20000, help="requests of part 2")
    parser.add_argument("--real", type=int, default=256, help="chat requests of part 3")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    lines = [
        "Batch jobs: run_batch against AsyncOpenAI, asyncio.gather and the 0.0.x loop",
        f"openai {openai.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} cores; "
        "servers in their own processes",
        "",
    ]
    with synthetic_server() as base_url:
        lines += asyncio.run(_client_rates(base_url, args.rounds, args.burst))
        lines.append("")
        lines += asyncio.run(_runner_vs_gather(base_url, args.requests))
    if not args.skip_real:
        lines.append("")
        lines += _real_model(args.real, (4, 8, 16))
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if not args.skip_real:
        RESULT.parent.mkdir(exist_ok=True)
        RESULT.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
