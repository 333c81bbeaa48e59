"""Every fault a gateway meets, timed: how long until the client has its error, and what it saw.

A gateway (``ncompass serve --engine openai``, in-process) in front of synthetic upstreams run as
subprocesses (so one can be killed with SIGKILL), and a small upstream that sends only keep-alive
comments. Each case prints the time from the fault (or the request) to the client's error as a ratio to
the bound that should end it, where there is one, and the error the client saw:

- an upstream killed mid-stream (bound: none; the socket closes);
- every upstream down (the first request, then one after a health probe);
- a stream whose upstream stalls (bound: ``--upstream-timeout``);
- a whole answer that does not come (bound: ``--upstream-answer-timeout``);
- an upstream sending only ``: ping`` comments (bound: ``--upstream-timeout``);
- a client hanging up on a whole answer (time until the upstream is free for the next request);
- a gateway booted with its upstream down (the answer while it waits).

    .venv/bin/python bench/gateway_faults.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer
from ncompass_openai.server.http._local import bind_socket

KEY = "nc-bench-faults-key-0123456789"
UP = "nc-bench-faults-upstream-key-42"
CHAT = {"model": "synthetic", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 40}
AUTH = {"Authorization": f"Bearer {KEY}"}


class Upstream:
    """``ncompass serve --engine synthetic`` in a subprocess."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "ncompass_openai.server", "--engine", "synthetic", "--port", "0",
             "--db", ":memory:", "--api-key", UP, "--log-level", "warning", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            found = re.search(r"listening on (http://\S+/v1)", line)
            if found:
                self.base_url = found[1]
                break
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep its pipe drained
        _wait(lambda: httpx.get(self.base_url.removesuffix("/v1") + "/health").status_code == 200)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _wait(ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError("not ready in time")


def _pinging_upstream() -> tuple[str, uvicorn.Server]:
    async def chat(request: Request) -> StreamingResponse:
        async def pings() -> AsyncIterator[bytes]:
            for _ in range(600):
                yield b": ping\n\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(pings(), media_type="text/event-stream")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "synthetic", "object": "model"}]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    _wait(lambda: server.started)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1", server


def _gateway(urls: list[str], **settings: Any) -> LocalServer:
    values: dict[str, Any] = {
        "engine": "openai", "upstream": urls, "upstream_api_key": UP, "api_keys": [KEY], "db": ":memory:",
        "health_interval": 0.5, "log_level": "critical",
    }  # fmt: skip
    return LocalServer(**{**values, **settings}).start()


def _seen(response: httpx.Response) -> str:
    """What the client saw: the status, and the error (the stream's last event for a stream)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        last = [line for line in response.text.splitlines() if line.startswith("data: {")][-1]
        error = json.loads(last[6:]).get("error") or {}
        return f"200 stream, then in-stream error `{error.get('code')}`: {error.get('message', '')[:70]}"
    body = response.json().get("error") or {}
    retry = response.headers.get("Retry-After")
    return (
        f"{response.status_code} `{body.get('code')}`"
        + (f", Retry-After {retry}" if retry else "")
        + (f": {body.get('message', '')[:70]}")
    )


def main() -> int:
    rows: list[tuple[str, str, str]] = []

    # An upstream killed mid-stream.
    slow = Upstream("--synthetic-token-rate", "20")
    gw = _gateway([slow.base_url])
    with httpx.Client(base_url=gw.url, headers=AUTH, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as stream:
            lines = stream.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            killed = time.monotonic()
            slow.kill()
            rest = list(lines)
            took = time.monotonic() - killed
        event = json.loads([line for line in rest if line.startswith("data: {")][-1][6:])
        rows.append(("upstream killed mid-stream", f"{took * 1000:.0f} ms after the kill (no bound)",
                     f"200 stream, then in-stream error `{event['error']['code']}`"))  # fmt: skip
        # Every upstream down: the request that finds it out, then one after a probe.
        started = time.monotonic()
        first = c.post("/v1/chat/completions", json=CHAT)
        rows.append(
            (
                "every upstream down: the first request",
                f"{(time.monotonic() - started) * 1000:.0f} ms",
                _seen(first),
            )
        )
        time.sleep(1.2)
        started = time.monotonic()
        later = c.post("/v1/chat/completions", json=CHAT)
        rows.append(
            (
                "every upstream down: after a probe",
                f"{(time.monotonic() - started) * 1000:.0f} ms",
                _seen(later),
            )
        )
    gw.stop()

    # A stalling upstream: one token every 2 s.
    stalled = Upstream("--synthetic-token-rate", "0.5")
    gw = _gateway([stalled.base_url], upstream_timeout=0.5, upstream_answer_timeout=1.5)
    with httpx.Client(base_url=gw.url, headers=AUTH, timeout=30) as c:
        started = time.monotonic()
        streamed = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        took = time.monotonic() - started
        rows.append(
            (
                "stream stalls (--upstream-timeout 0.5)",
                f"{took:.2f} s ({took / 0.5:.2f}x the timeout)",
                _seen(streamed),
            )
        )
        started = time.monotonic()
        whole = c.post("/v1/chat/completions", json=CHAT)
        took = time.monotonic() - started
        rows.append(
            (
                "whole answer late (--upstream-answer-timeout 1.5)",
                f"{took:.2f} s ({took / 1.5:.2f}x)",
                _seen(whole),
            )
        )
    gw.stop()
    stalled.kill()

    # Keep-alive comments only.
    pinging, ping_server = _pinging_upstream()
    gw = _gateway([pinging], upstream_timeout=1.0)
    with httpx.Client(base_url=gw.url, headers=AUTH, timeout=30) as c:
        started = time.monotonic()
        streamed = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        took = time.monotonic() - started
        rows.append(
            ("only `: ping` comments (--upstream-timeout 1)", f"{took:.2f} s ({took:.2f}x)", _seen(streamed))
        )
    gw.stop()
    ping_server.should_exit = True

    # A client hanging up on a whole answer: 40 tokens take the upstream 8 s; one request per key there.
    busy = Upstream("--synthetic-token-rate", "5", "--max-queue-per-key", "1")
    gw = _gateway([busy.base_url])
    started = time.monotonic()
    with contextlib.suppress(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=1)
    gone = time.monotonic()
    up_auth = {"Authorization": f"Bearer {UP}"}
    _wait(
        lambda: (
            httpx.post(
                busy.base_url + "/chat/completions", json={**CHAT, "max_tokens": 1}, headers=up_auth
            ).status_code
            == 200
        ),
        20,
    )
    free = f"upstream free {time.monotonic() - gone:.2f} s after"
    rows.append(
        ("client hangs up on a whole answer (8 s upstream)", free, "its own timeout; the upstream closed")
    )
    gw.stop()
    busy.kill()

    # Booted with its upstream down: it stays up, starting.
    gw = _gateway(["http://127.0.0.1:9/v1"], start_timeout=0.5, wait_for_model=False)
    with httpx.Client(base_url=gw.url, headers=AUTH, timeout=30) as c:
        time.sleep(1)
        started = time.monotonic()
        waiting = c.post("/v1/chat/completions", json={**CHAT, "model": "upstream"})
        rows.append(
            ("booted with its upstream down", f"{(time.monotonic() - started) * 1000:.0f} ms", _seen(waiting))
        )
    gw.stop()

    width = max(len(r[0]) for r in rows)
    print("Gateway faults: time to the client's error (ratios to the bound that ends it), and what it saw")
    for case, took, seen in rows:
        print(f"  {case:<{width}}  {took}")
        print(f"  {'':<{width}}    {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
