"""Per-chunk client cost of streamed text: the 0.0.x fast path against openai's ``Stream`` and raw httpx.

A tiny local HTTP server answers every ``POST /v1/completions`` with the same pre-recorded SSE body
(``--chunks`` ``text_completion`` events, one HTTP chunk each, then ``[DONE]``), written as fast as the
socket takes it, so the time measured is the client's: reading, SSE parsing, JSON decoding and
(for openai's ``Stream``) building a pydantic object per chunk. The variants run interleaved, round by
round, so machine noise hits them alike; the report gives the median per-chunk time of each and the
ratios of the medians, all from one run:

- ``openai Stream``: ``openai.OpenAI().completions.create(stream=True)``, reading ``.choices[0].text``;
- ``raw httpx + json``: a hand-written loop over the HTTP library openai uses (httpx2 on 3.x, httpx on 2.x),
  ``iter_lines()``, ``json.loads`` and ``["choices"][0]["text"]``;
- ``fast path (TextStream)``: this package's text iterator over openai's raw streaming response
  (``with_streaming_response``), as ``complete_prompt`` uses it;
- ``NCompass.complete_prompt``: the whole 0.0.x method (validation, request building, the iterator).

The fast path decodes with orjson when it is installed (the ``speedups`` extra), else with json; the
rows marked ``, json`` force json so both are shown.

Goals (issue 4): fast path ≤ 0.25× openai ``Stream``, ≤ 1.5× raw httpx + json. The same is run for the
async twins. Reads no environment variables.

    python bench/streaming.py [--chunks 2000] [--rounds 25] [--out bench/results/streaming.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai

from ncompass_openai import _streaming
from ncompass_openai._compat import OPENAI_MAJOR, httpx
from ncompass_openai._streaming import _loads, open_async_text_stream, open_text_stream

MODEL = "bench-model"


def sse_body(chunks: int) -> bytes:
    """A chunked-encoded SSE body shaped like a real server's (one HTTP chunk per event)."""
    events = []
    for i in range(chunks):
        event = {
            "id": "cmpl-bench",
            "object": "text_completion",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "text": f" tok{i % 97}",
                    "logprobs": None,
                    "finish_reason": "length" if i == chunks - 1 else None,
                }
            ],
        }
        events.append(b"data: " + json.dumps(event).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events) + b"0\r\n\r\n"


class SSEServer:
    """Answers /v1/models and /v1/completions (always the same body) over keep-alive HTTP/1.1."""

    def __init__(self, body: bytes) -> None:
        self._head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"cache-control: no-cache\r\n\r\n"
        )
        self._body = body
        models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
        self._models = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (
                len(models),
                models,
            )
        )
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self._sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while True:
                line = reader.readline()
                if not line:
                    return
                length = 0
                while True:
                    header = reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                reader.read(length)
                if line.startswith(b"GET /v1/models"):
                    conn.sendall(self._models)
                else:
                    conn.sendall(self._head + self._body)


def run_openai_stream(client: openai.OpenAI) -> int:
    n = 0
    stream = client.completions.create(model=MODEL, prompt="hi", max_tokens=10_000, stream=True)
    for chunk in stream:
        if chunk.choices:
            text = chunk.choices[0].text
            n += bool(text)
    return n


def run_raw_httpx(client: httpx.Client, url: str, headers: dict[str, str]) -> int:
    n = 0
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 10_000, "stream": True}
    with client.stream("POST", url, json=body, headers=headers) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    break
                choices = json.loads(data)["choices"]
                if choices:
                    n += bool(choices[0]["text"])
    return n


def run_fast_path(client: openai.OpenAI) -> int:
    n = 0
    raw = client.completions.with_streaming_response.create(
        model=MODEL, prompt="hi", max_tokens=10_000, stream=True
    )
    for piece in open_text_stream(raw.__enter__().http_response, chat=False):
        n += bool(piece)
    return n


def with_json_decoder(run: Callable[[], int]) -> int:
    """Runs ``run`` with the fast path decoding through json, as without the ``speedups`` extra."""
    _streaming._loads = json.loads
    try:
        return run()
    finally:
        _streaming._loads = _loads


async def awith_json_decoder(run: Callable[[], Awaitable[int]]) -> int:
    _streaming._loads = json.loads
    try:
        return await run()
    finally:
        _streaming._loads = _loads


def run_complete_prompt(client: object) -> int:
    n = 0
    for piece in client.complete_prompt("hi", max_tokens=10_000):  # type: ignore[attr-defined]
        n += bool(piece)
    return n


async def arun_openai_stream(client: openai.AsyncOpenAI) -> int:
    n = 0
    stream = await client.completions.create(model=MODEL, prompt="hi", max_tokens=10_000, stream=True)
    async for chunk in stream:
        if chunk.choices:
            n += bool(chunk.choices[0].text)
    return n


async def arun_raw_httpx(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> int:
    n = 0
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 10_000, "stream": True}
    async with client.stream("POST", url, json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    break
                choices = json.loads(data)["choices"]
                if choices:
                    n += bool(choices[0]["text"])
    return n


async def arun_fast_path(client: openai.AsyncOpenAI) -> int:
    n = 0
    raw = client.completions.with_streaming_response.create(
        model=MODEL, prompt="hi", max_tokens=10_000, stream=True
    )
    response = await raw.__aenter__()
    async for piece in await open_async_text_stream(response.http_response, chat=False):
        n += bool(piece)
    return n


async def arun_complete_prompt(client: object) -> int:
    n = 0
    async for piece in await client.complete_prompt("hi", max_tokens=10_000):  # type: ignore[attr-defined]
        n += bool(piece)
    return n


def measure(variants: dict[str, Callable[[], int]], rounds: int, chunks: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, run in variants.items():  # warm up: connections, imports, caches
        assert run() == chunks, name
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            got = run()
            elapsed = time.perf_counter() - start
            assert got == chunks, (name, got)
            times[name].append(elapsed / chunks)
    return times


async def ameasure(
    variants: dict[str, Callable[[], Awaitable[int]]], rounds: int, chunks: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, run in variants.items():
        assert await run() == chunks, name
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            got = await run()
            elapsed = time.perf_counter() - start
            assert got == chunks, (name, got)
            times[name].append(elapsed / chunks)
    return times


def table(title: str, times: dict[str, list[float]]) -> list[str]:
    medians = {name: statistics.median(values) for name, values in times.items()}
    base_openai = medians[next(name for name in medians if name.startswith("openai"))]
    base_raw = medians[next(name for name in medians if name.startswith("raw"))]
    lines = [
        title,
        f"{'variant':<34}{'median µs/chunk':>16}{'p10':>8}{'p90':>8}{'vs openai':>11}{'vs raw':>9}",
    ]
    for name, values in times.items():
        deciles = statistics.quantiles(values, n=10)
        lines.append(
            f"{name:<34}{medians[name] * 1e6:>16.2f}{deciles[0] * 1e6:>8.2f}{deciles[-1] * 1e6:>8.2f}"
            f"{medians[name] / base_openai:>10.3f}×{medians[name] / base_raw:>8.3f}×"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    server = SSEServer(sse_body(args.chunks))
    key = "bench-key"
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{server.base_url}/completions"
    plain = openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0)
    raw_client = httpx.Client(timeout=60)
    variants: dict[str, Callable[[], int]] = {
        "openai Stream": lambda: run_openai_stream(plain),
        "raw httpx + json": lambda: run_raw_httpx(raw_client, url, headers),
        "fast path (TextStream)": lambda: run_fast_path(plain),
        "fast path (TextStream), json": lambda: with_json_decoder(lambda: run_fast_path(plain)),
    }
    nc = None
    try:
        from ncompass_openai import NCompass

        nc = NCompass(api_key=key, base_url=server.base_url, model=MODEL, max_retries=0)
        variants["NCompass.complete_prompt"] = lambda: run_complete_prompt(nc)
    except ImportError as err:  # pragma: no cover - before the client exists
        print(f"(NCompass not measured: {err})", file=sys.stderr)
    sync_times = measure(variants, args.rounds, args.chunks)

    async def run_async() -> dict[str, list[float]]:
        aplain = openai.AsyncOpenAI(api_key=key, base_url=server.base_url, max_retries=0)
        araw = httpx.AsyncClient(timeout=60)
        avariants: dict[str, Callable[[], Awaitable[int]]] = {
            "openai AsyncStream": lambda: arun_openai_stream(aplain),
            "raw httpx + json (async)": lambda: arun_raw_httpx(araw, url, headers),
            "fast path (AsyncTextStream)": lambda: arun_fast_path(aplain),
            "fast path (AsyncTextStream), json": lambda: awith_json_decoder(lambda: arun_fast_path(aplain)),
        }
        try:
            from ncompass_openai import AsyncNCompass

            anc = AsyncNCompass(api_key=key, base_url=server.base_url, model=MODEL, max_retries=0)
            avariants["AsyncNCompass.complete_prompt"] = lambda: arun_complete_prompt(anc)
        except ImportError:  # pragma: no cover
            anc = None
        try:
            return await ameasure(avariants, args.rounds, args.chunks)
        finally:
            await aplain.close()
            await araw.aclose()
            if anc is not None:
                await anc.close()

    async_times = asyncio.run(run_async())
    plain.close()
    raw_client.close()
    if nc is not None:
        nc.close()

    lines = [
        "bench/streaming.py: per-chunk client cost of streamed text (lower is better)",
        f"python {platform.python_version()}, openai {openai.__version__} (major {OPENAI_MAJOR}), "
        f"{httpx.__name__} {httpx.__version__}, {platform.machine()}, {args.chunks} chunks x "
        f"{args.rounds} interleaved rounds, pre-recorded SSE body from a local server",
        f"fast path JSON decoder: {_loads.__module__}.{_loads.__name__} (orjson when installed, else json); "
        "the ', json' rows force json.loads (no `speedups` extra); raw httpx + json always uses json",
        "",
        *table("sync", sync_times),
        "",
        *table("async", async_times),
        "",
        "goals: fast path <= 0.25x openai Stream, <= 1.5x raw httpx + json",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
