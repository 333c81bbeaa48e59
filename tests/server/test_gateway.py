"""``ncompass serve --engine openai``: the protocol in front of real upstream servers on 127.0.0.1.

The upstreams are this project's server with the synthetic engine (in-process replicas, or subprocesses
where a test kills one), a small server that answers 500s, and (marked ``model``) llama-cpp-python's own
OpenAI server on the real model. Every request goes through the gateway's real sockets to theirs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from _helpers import free_port, llama_cpp_server, run_example, wait_for
from ncompass_openai import NCompass, nCompass
from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer
from ncompass_openai.server.http._local import bind_socket

from .conftest import KEY, ServerProcess

UP = "nc-upstream-secret-key-7f3a9c"  # the gateway's key to its upstreams: must never leak
CHAT = {"model": "synthetic", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 6}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _upstream(**overrides: Any) -> LocalServer:
    return LocalServer(engine="synthetic", api_keys=[UP], **overrides).start()


@pytest.fixture
def upstreams() -> Iterator[list[LocalServer]]:
    """Two replicas of the synthetic model, each its own server."""
    servers = [_upstream(), _upstream()]
    yield servers
    for srv in servers:
        srv.stop()


def _gateway(make_server: Callable[..., LocalServer], urls: list[str], **overrides: Any) -> LocalServer:
    values: dict[str, Any] = {"engine": "openai", "upstream": urls, "upstream_api_key": UP}
    values["health_interval"] = 0.2
    values.update(overrides)
    return make_server(**values)


def _model_gateway(
    make_server: Callable[..., LocalServer], model_server: Any, api_key: str, *features: str
) -> LocalServer:
    """A gateway in front of the real model's server (the llama engine), declaring ``features``."""
    return _gateway(
        make_server, [model_server.base_url], upstream_api_key=api_key, upstream_supports=list(features)
    )


def _upstream_requests(srv: LocalServer | str) -> int:
    """How many inference requests an upstream answered (its sessions' own count)."""
    base = srv if isinstance(srv, str) else srv.base_url
    answer = httpx.get(base + "/sessions", headers={"Authorization": f"Bearer {UP}"}, params={"limit": 100})
    return sum(s["requests"] for s in answer.json()["data"])


def _sse(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


# -- the protocol through the gateway ---------------------------------------------------------------------


def test_answers_are_the_upstreams(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], upstreams: list[LocalServer]
) -> None:
    gw = _gateway(make_server, [u.base_url for u in upstreams])
    direct = httpx.post(
        upstreams[0].base_url + "/chat/completions",
        json={**CHAT, "temperature": 0},
        headers={"Authorization": f"Bearer {UP}"},
    ).json()
    with client(gw) as c:
        assert c.get("/v1/models").json()["data"][0]["id"] == "synthetic"  # learned from the upstream
        plain = c.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
        assert plain.status_code == 200, plain.text
        body = plain.json()
        assert body["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] == direct["usage"]["completion_tokens"] == 6
        assert body["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]
        assert body["id"].startswith("chatcmpl-") and body["id"] != direct["id"]  # the gateway's own answer
        assert "NCompass-Session" in plain.headers

        streamed = c.post("/v1/chat/completions", json={**CHAT, "temperature": 0, "stream": True})
        chunks = _sse(streamed.text)
        text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
        assert text == direct["choices"][0]["message"]["content"]
        assert streamed.text.rstrip().endswith("data: [DONE]")
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"

        batch = c.post(
            "/v1/completions",
            json={"model": "synthetic", "prompt": ["a b", "c d e"], "n": 2, "max_tokens": 3, "echo": True},
        ).json()
        assert [ch["index"] for ch in batch["choices"]] == [0, 1, 2, 3]
        assert [ch["text"].split(" ")[0] for ch in batch["choices"]] == ["a", "a", "c", "c"]  # echoed once
        assert batch["usage"] == {
            "prompt_tokens": 5,
            "completion_tokens": 12,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

        session = c.get("/v1/sessions").json()["data"][0]
    # The gateway's implicit session counted the upstream's usage of all three requests.
    assert session["requests"] == 3
    assert session["usage"] == {
        "prompt_tokens": 2 * body["usage"]["prompt_tokens"] + 5,
        "completion_tokens": 6 + 6 + 12,
    }


def test_openai_client_and_idempotent_retry(
    make_server: Callable[..., LocalServer], upstreams: list[LocalServer], own_keys: tuple[str, str]
) -> None:
    gw = _gateway(make_server, [u.base_url for u in upstreams])
    with openai.OpenAI(base_url=gw.base_url, api_key=own_keys[0], max_retries=0) as oa:
        first = oa.chat.completions.with_raw_response.create(
            **CHAT, extra_headers={"Idempotency-Key": "job-1-line-1"}
        )
        again = oa.chat.completions.with_raw_response.create(
            **CHAT, extra_headers={"Idempotency-Key": "job-1-line-1"}
        )
        assert again.parse().id == first.parse().id  # replayed by the gateway
        streamed = list(oa.chat.completions.create(**CHAT, stream=True))
        assert streamed[-1].choices[0].finish_reason == "length"
    assert sum(_upstream_requests(u) for u in upstreams) == 2  # the replay never went upstream


def test_replicas_share_the_load(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], upstreams: list[LocalServer]
) -> None:
    gw = _gateway(make_server, [u.base_url for u in upstreams], max_queue_per_key=16)
    results: list[int] = []

    def ask() -> None:
        with client(gw) as c:
            results.append(c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 20}).status_code)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 8
    counts = [_upstream_requests(u) for u in upstreams]
    assert sum(counts) == 8 and min(counts) >= 2, counts  # least-outstanding: neither replica idle


@pytest.mark.parametrize(
    ("body", "param", "feature"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools", "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format", "response_format"),
        ({"logprobs": True}, "logprobs", "logprobs"),
        ({"top_k": 5}, "top_k", "vllm"),
        ({"chat_template": "{{ messages }}"}, "chat_template", "vllm"),
    ],
)
def test_undeclared_features_are_refused_before_anything_is_sent(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    upstreams: list[LocalServer],
    body: dict[str, Any],
    param: str,
    feature: str,
) -> None:
    gw = _gateway(make_server, [upstreams[0].base_url])
    with client(gw) as c:
        answer = c.post("/v1/chat/completions", json={**CHAT, **body})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["param"] == param and error["code"] == "unsupported_by_upstream"
        assert feature in error["message"] and "--upstream-supports" in error["message"]
        # Defaults are not a use: `logprobs: false` and a text format go through.
        assert c.post("/v1/chat/completions", json={**CHAT, "logprobs": False}).status_code == 200
        responses = c.post("/v1/responses", json={"model": "synthetic", "input": "hi"})
        assert responses.status_code == 400 and "Responses API" in responses.json()["error"]["message"]
    assert _upstream_requests(upstreams[0]) == 1


def test_declared_vllm_fields_are_forwarded(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], upstreams: list[LocalServer]
) -> None:
    gw = _gateway(make_server, [upstreams[0].base_url], upstream_supports=["vllm"])
    with client(gw) as c:
        answer = c.post("/v1/chat/completions", json={**CHAT, "top_k": 5, "min_tokens": 2})
        assert answer.status_code == 200, answer.text
        # The upstream validates what it is sent: its own 400 comes back as the tenant's 400.
        refused = c.post("/v1/chat/completions", json={**CHAT, "top_k": 5, "logit_bias": {"5": 1}})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "upstream_refused"
    assert "logit_bias" in refused.json()["error"]["message"]


def test_declared_response_format_is_forwarded_and_its_schema_checked_first(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], upstreams: list[LocalServer]
) -> None:
    gw = _gateway(make_server, [upstreams[0].base_url], upstream_supports=["response_format"])
    with client(gw) as c:
        bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
        answer = c.post("/v1/chat/completions", json={**CHAT, "response_format": bad})
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "response_format.json_schema.schema"
        assert _upstream_requests(upstreams[0]) == 0  # refused here, before anything was sent
        # Forwarded: this upstream (the synthetic engine) cannot constrain, and says so.
        fmt = {"type": "json_object"}
        answer = c.post("/v1/chat/completions", json={**CHAT, "response_format": fmt})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "upstream_refused"
    assert "constrained decoding" in answer.json()["error"]["message"]


def test_declared_logprobs_are_forwarded(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], upstreams: list[LocalServer]
) -> None:
    gw = _gateway(make_server, [upstreams[0].base_url], upstream_supports=["logprobs"])
    with client(gw) as c:
        answer = c.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 2})
    # Forwarded: this upstream (the synthetic engine) has no probabilities, and says so.
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "upstream_refused"
    assert "logprobs" in answer.json()["error"]["message"]


def test_declared_tools_are_forwarded(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], upstreams: list[LocalServer]
) -> None:
    gw = _gateway(make_server, [upstreams[0].base_url], upstream_supports=["tools"])
    with client(gw) as c:
        answer = c.post("/v1/chat/completions", json={**CHAT, "tools": [WEATHER]})
    # Forwarded: this upstream (the synthetic engine) cannot constrain a call, and says so.
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "upstream_refused"
    assert "tools" in answer.json()["error"]["message"]


def test_declared_responses_are_forwarded_and_kept_here(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    upstreams: list[LocalServer],
    own_keys: tuple[str, str],
) -> None:
    gw = _gateway(make_server, [u.base_url for u in upstreams], upstream_supports=["responses"])
    up = {"Authorization": f"Bearer {UP}"}
    first = {"model": "synthetic", "input": "hello there", "max_output_tokens": 5, "temperature": 0}
    direct = httpx.post(upstreams[0].base_url + "/responses", json=first, headers=up).json()
    with client(gw) as c:
        answer = c.post("/v1/responses", json=first)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["output"][0]["content"][0]["text"] == direct["output"][0]["content"][0]["text"]
        assert body["usage"] == direct["usage"] and body["status"] == "incomplete"
        assert body["id"] != direct["id"] and c.get(f"/v1/responses/{body['id']}").json() == body
        # Continued here: the upstream is sent the whole conversation, and stores nothing.
        follow = {"model": "synthetic", "input": "and then", "max_output_tokens": 3, "temperature": 0}
        streamed = c.post(
            "/v1/responses", json={**follow, "previous_response_id": body["id"], "stream": True}
        )
        events = _sse(streamed.text)
        whole = [
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": body["output"][0]["content"][0]["text"]},
            {"role": "user", "content": "and then"},
        ]
        want = httpx.post(
            upstreams[0].base_url + "/responses", json={**follow, "input": whole, "stream": True}, headers=up
        )
        assert [e["type"] for e in events] == [e["type"] for e in _sse(want.text)]
        done, want_done = events[-1]["response"], _sse(want.text)[-1]["response"]
        assert (
            done["usage"] == want_done["usage"]
            and done["output"][0]["content"] == want_done["output"][0]["content"]
        )
        assert done["previous_response_id"] == body["id"]
        # The conversation is this server's: another tenant cannot continue it.
    with client(gw, key=own_keys[1]) as other:
        stranger = other.post("/v1/responses", json={**follow, "previous_response_id": body["id"]})
    assert stranger.status_code == 404 and stranger.json()["error"]["param"] == "previous_response_id"
    # Its tools need their own declaration, named as the Responses field.
    with client(gw) as c:
        tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
        refused = c.post("/v1/responses", json={**first, "tools": [tool]})
        fmt = {"format": {"type": "json_object"}}
        refused_format = c.post("/v1/responses", json={**first, "text": fmt})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools"
    assert "--upstream-supports tools" in refused.json()["error"]["message"]
    assert refused_format.status_code == 400 and refused_format.json()["error"]["param"] == "text.format"
    assert sum(_upstream_requests(u) for u in upstreams) == 2 + 2  # the gateway's two, and the direct two


def test_start_and_stop_without_commands_say_which_flags(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], upstreams: list[LocalServer]
) -> None:
    gw = _gateway(make_server, [upstreams[0].base_url], idle_shutdown=0.3)
    with client(gw) as c:
        for action in ("start", "stop"):
            answer = c.post(f"/v1/deployment/{action}")
            assert answer.status_code == 400
            assert "--start-command" in answer.json()["error"]["message"]
        time.sleep(0.8)  # past the idle shutdown: an always-on upstream is not stopped
        assert c.get("/v1/deployment").json()["state"] == "running"
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_clients_that_hang_up_free_their_places(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], own_keys: tuple[str, str]
) -> None:
    paced = _upstream(synthetic_token_rate=20.0)
    try:
        gw = _gateway(make_server, [paced.base_url], max_queue_per_key=4)
        runtime: Any = gw.state.backend
        for _ in range(3):  # more hang-ups than the key's limit: each one's place came back
            with client(gw, timeout=30) as c:
                for _ in range(4):
                    with c.stream(
                        "POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 500, "stream": True}
                    ) as r:
                        assert r.status_code == 200
                        next(r.iter_lines())
        assert wait_for(lambda: runtime.inflight(runtime_tenant(gw, own_keys[0])) == 0, 5)
        assert wait_for(lambda: [r.outstanding for r in runtime.pool.replicas] == [0], 5)
        # The upstream stopped generating for them too: its own queue is empty.
        assert wait_for(lambda: not paced.state.backend.requests_by_tenant(), 5)
    finally:
        paced.stop()


def runtime_tenant(srv: LocalServer, key: str) -> str:
    from ncompass_openai.server.ledger._auth import hash_key, tenant_id_for

    return tenant_id_for(hash_key(key))


# -- faults ------------------------------------------------------------------------------------------------


def _spawn_upstream(spawn: Callable[..., ServerProcess], *args: str) -> ServerProcess:
    return spawn("--db", ":memory:", "--api-key", UP, "--log-level", "warning", *args)


def test_replica_killed_mid_stream(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    spawn_server: Callable[..., ServerProcess],
) -> None:
    slow = _spawn_upstream(spawn_server, "--synthetic-token-rate", "20")
    other = _upstream()
    try:
        gw = _gateway(make_server, [slow.base_url, other.base_url], health_interval=30)
        # Steer the first request to the slow replica: the other one looks busy for a moment.
        gw.state.backend.pool.replicas[1].outstanding += 1  # type: ignore[attr-defined]
        with client(gw, timeout=30) as c:
            with c.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 200, "stream": True}
            ) as r:
                assert r.status_code == 200
                pieces = r.iter_lines()
                assert any(line.startswith("data: {") for line in pieces)  # the stream has begun
                gw.state.backend.pool.replicas[1].outstanding -= 1  # type: ignore[attr-defined]
                slow.proc.send_signal(signal.SIGKILL)
                rest = list(pieces)
            events = _sse("\n".join(rest))
            assert "error" in events[-1], rest[-3:]  # the protocol's in-stream error, not a silent end
            assert events[-1]["error"]["code"] == "upstream_error"
            assert "data: [DONE]" not in rest
            # The dead replica left the rotation at once: the next request goes to the other one.
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
            session = c.get("/v1/sessions").json()["data"][0]
        assert session["requests"] == 2 and session["usage"]["completion_tokens"] >= 6
    finally:
        other.stop()


def test_replica_down_at_start_and_all_down(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    spawn_server: Callable[..., ServerProcess],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    live = _spawn_upstream(spawn_server)
    gw = _gateway(make_server, [dead, live.base_url], metrics=True)
    with client(gw) as c:
        for _ in range(4):  # never sent to the dead replica
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        metrics = httpx.get(gw.url + "/metrics").text
        assert f'ncompass_upstream_healthy{{replica="{dead}"}} 0.0' in metrics
        assert f'ncompass_upstream_healthy{{replica="{live.base_url}"}} 1.0' in metrics
        assert UP not in metrics
        live.proc.send_signal(signal.SIGKILL)
        live.proc.wait()
        answer = c.post("/v1/chat/completions", json=CHAT)
        # The first request after the crash may still pick it: it fails before its first byte (502);
        # once the probe has seen it, the protocol's 503 says to come back.
        if answer.status_code == 502:
            assert answer.json()["error"]["code"] == "upstream_error"
        assert wait_for(lambda: c.get("/v1/deployment").json()["state"] == "starting", 5)
        answer = c.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "model_starting"
        assert answer.headers["x-should-retry"] == "true" and int(answer.headers["retry-after"]) >= 1
        for text in (answer.text, c.get("/v1/deployment").text):
            assert UP not in text


def test_slow_upstream_hits_the_read_timeout(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    spawn_server: Callable[..., ServerProcess],
) -> None:
    slow = _spawn_upstream(spawn_server, "--synthetic-token-rate", "0.5")  # a token every 2 s
    # A stream's reads wait 0.5 s each; an answer that is not streamed is asked for whole, and waited
    # for 1.5 s in all.
    gw = _gateway(make_server, [slow.base_url], upstream_timeout=0.5, upstream_answer_timeout=1.5)
    with client(gw, timeout=30) as c:
        started = time.monotonic()
        streamed = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert time.monotonic() - started < 5
        assert streamed.status_code == 200
        events = _sse(streamed.text)
        assert "error" in events[-1] and "0.5 s (--upstream-timeout)" in events[-1]["error"]["message"]
        started = time.monotonic()
        plain = c.post("/v1/chat/completions", json=CHAT)
        assert 1.5 <= time.monotonic() - started < 5
        assert plain.status_code == 502
        assert "1.5 s (--upstream-answer-timeout)" in plain.json()["error"]["message"]
        # The stream is counted; the whole answer that never came is a 502 before any of it, as for a
        # replica that cannot be reached. Still generating, it was not retried on another replica.
        assert c.get("/v1/sessions").json()["data"][0]["requests"] == 1
        assert c.get("/v1/deployment").json()["ready"]


PROSE = ["Blue", " is", " a", " colour."]
PROSE_DELTAS = [{"content": w} for w in PROSE]


def _whole(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """The message a stream's deltas make: their content joined, their tool calls' pieces merged."""
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        for piece in delta.get("tool_calls") or ():
            call = calls.setdefault(piece["index"], {"function": {"arguments": ""}})
            call.update({k: v for k, v in piece.items() if k not in ("index", "function")})
            function = piece.get("function") or {}
            call["function"]["arguments"] += function.get("arguments") or ""
            call["function"].update({k: v for k, v in function.items() if k != "arguments"})
    content = "".join(d.get("content") or "" for d in deltas) or None
    return {"role": "assistant", "content": content} | ({"tool_calls": list(calls.values())} if calls else {})


async def _pings(every: float) -> AsyncIterator[bytes]:
    for _ in range(100):
        yield b": ping\n\n"
        await asyncio.sleep(every)


class _StubUpstream:
    """An OpenAI-shaped server that answers every chat request with ``status`` (and counts them): an
    error body, or for 200 whatever the request asked for (``deltas``, else prose), streamed or whole."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        deltas: list[dict[str, Any]] | None = None,
        whole: dict[str, Any] | None = None,
        pings: float | None = None,
        port: int = 0,
    ) -> None:
        self.hits = 0
        self.streamed: list[bool] = []  # what each request asked for
        self.bodies: list[dict[str, Any]] = []  # the bodies it was sent

        async def fail(request: Request) -> Response:
            self.hits += 1
            self.bodies.append(await request.json())
            if status == 200:
                said = PROSE_DELTAS if deltas is None else deltas
                finish = "tool_calls" if deltas and "tool_calls" in deltas[0] else "stop"
                self.streamed.append(bool(self.bodies[-1].get("stream")))
                if not self.streamed[-1]:
                    choice = {"index": 0, "message": _whole(said), "finish_reason": finish}
                    return JSONResponse(whole or {"object": "chat.completion", "choices": [choice]})
                if pings is not None:  # a stream of keep-alive comments only, for at most 100 of them
                    return StreamingResponse(_pings(pings), media_type="text/event-stream")
                chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in said]
                chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                return Response(body, media_type="text/event-stream")
            error = {"message": f"stub failure, key was {request.headers.get('authorization')}", "type": "x"}
            return JSONResponse({"error": error}, status_code=status, headers=headers)

        async def models(request: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{"id": "synthetic", "object": "model"}]})

        async def health(request: Request) -> JSONResponse:
            return JSONResponse({"status": "ok"})

        app = Starlette(
            routes=[
                Route("/health", health),
                Route("/v1/models", models),
                Route("/v1/chat/completions", fail, methods=["POST"]),
            ]
        )
        self.sock = bind_socket("127.0.0.1", port)
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        assert wait_for(lambda: self.server.started, 10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def stub() -> Iterator[Callable[..., _StubUpstream]]:
    made: list[_StubUpstream] = []

    def make(
        status: int,
        headers: dict[str, str] | None = None,
        deltas: list[dict[str, Any]] | None = None,
        whole: dict[str, Any] | None = None,
        pings: float | None = None,
        port: int = 0,
    ) -> _StubUpstream:
        made.append(_StubUpstream(status, headers, deltas, whole, pings, port))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def test_upstream_errors(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
    upstreams: list[LocalServer],
) -> None:
    broken = stub(500)
    gw = _gateway(make_server, [broken.base_url, upstreams[0].base_url])
    with client(gw) as c:
        # A 500 before the first byte is retried once on the other replica: the tenant sees an answer.
        for _ in range(3):
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert broken.hits >= 1

    only_broken = _gateway(make_server, [broken.base_url])
    with client(only_broken) as c:
        answer = c.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_error"
    assert "stub failure" in answer.text and UP not in answer.text  # the key the stub echoed is cut out

    busy = _gateway(make_server, [stub(429, {"Retry-After": "7"}).base_url])
    with client(busy) as c:
        answer = c.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "7"
    assert answer.json()["error"]["code"] == "upstream_busy"

    refused = _gateway(make_server, [stub(401).base_url])
    with client(refused) as c:
        answer = c.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 502  # the gateway's key, not the tenant's: never a 401 to the tenant
    assert "--upstream-api-key" in answer.json()["error"]["message"] and UP not in answer.text


def test_upstream_key_never_logged(tmp_path: Path, spawn_server: Callable[..., ServerProcess]) -> None:
    upstream = _spawn_upstream(spawn_server)
    tenant = "nc-gateway-log-tenant-1234"
    gw = spawn_server(
        "--engine", "openai", "--upstream", upstream.base_url, "--upstream-api-key", UP,
        "--api-key", tenant, "--db", ":memory:", "--log-level", "debug",
    )  # fmt: skip
    with gw.client(tenant) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert c.post("/v1/chat/completions", json={**CHAT, "top_k": 3}).status_code == 400
    upstream.proc.send_signal(signal.SIGKILL)
    time.sleep(0.5)
    gw.stop()
    log = gw.output()
    assert "POST /v1/chat/completions" in log  # the log is on: the check sees real output
    assert UP not in log and tenant not in log


# -- lifecycle commands --------------------------------------------------------------------------------------


def _commands(tmp_path: Path, port: int) -> tuple[str, str]:
    """Shell commands that start and stop a synthetic upstream on ``port`` (its pid in a file)."""
    pid = tmp_path / "upstream.pid"
    log = tmp_path / "upstream.log"
    start = (
        f"{sys.executable} -m ncompass_openai.server --engine synthetic --port {port} --db :memory: "
        f"--api-key {UP} --log-level warning > {log} 2>&1 & echo $! > {pid}"
    )
    stop = f'kill "$(cat {pid})" && test "$NCOMPASS_ACTION" = stop && test -n "$NCOMPASS_MODEL"'
    return start, stop


def test_start_and_stop_commands_drive_a_real_upstream(
    tmp_path: Path,
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    own_keys: tuple[str, str],
) -> None:
    port = free_port()
    start, stop = _commands(tmp_path, port)
    url = f"http://127.0.0.1:{port}/v1"
    gw = _gateway(
        make_server,
        [url],
        api_keys=[own_keys[0]],  # one tenant: its stop is the last one, so the upstream goes down
        start_command=start,
        stop_command=stop,
        upstream_model="synthetic",
        start_timeout=60,
    )
    with client(gw) as c:
        assert c.get("/v1/deployment").json()["state"] == "running"  # the boot's start ran the command
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert c.post("/v1/deployment/stop").status_code in (200, 202)
        assert wait_for(lambda: c.get("/v1/deployment").json()["state"] == "stopped", 10)
        assert wait_for(lambda: not _answers(url), 10)  # the command really stopped the upstream
        stopped = c.post("/v1/chat/completions", json=CHAT)
        assert stopped.status_code == 503 and stopped.json()["error"]["code"] == "model_stopped"
        assert c.post("/v1/deployment/start").status_code == 202
        assert wait_for(lambda: c.get("/v1/deployment").json()["state"] == "running", 60)
        assert _answers(url)
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert c.post("/v1/deployment/stop").status_code in (200, 202)
        assert wait_for(lambda: not _answers(url), 10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url.removesuffix("/v1") + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo starting; echo 'no such cluster' >&2; exit 3", "exited with status 3: no such cluster"),
        ("sleep 60", "did not finish within 1 s"),
    ],
)
def test_failing_start_command(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], command: str, expected: str
) -> None:
    started = time.monotonic()
    gw = _gateway(
        make_server,
        [f"http://127.0.0.1:{free_port()}/v1"],
        start_command=command,
        stop_command="true",
        upstream_model="synthetic",
        start_timeout=1,
    )
    with client(gw) as c:
        assert wait_for(lambda: c.get("/v1/deployment").json()["state"] == "failed", 10)
        error = c.get("/v1/deployment").json()["error"]
        answer = c.post("/v1/chat/completions", json=CHAT)
    assert time.monotonic() - started < 20
    assert expected in error
    assert answer.status_code == 503 and expected in answer.json()["error"]["message"]


# -- an engine nobody here wrote ---------------------------------------------------------------------------


@pytest.mark.model
def test_llama_cpp_python_server_as_upstream(
    tmp_path: Path, make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    with llama_cpp_server(tmp_path / "llama_cpp_server.log", key=UP) as url:
        gw = _gateway(make_server, [url], served_model_name="smollm2")
        with client(gw, timeout=120) as c:
            assert c.get("/v1/models").json()["data"][0]["id"] == "smollm2"
            messages = [{"role": "user", "content": "Name a colour."}]
            body = {"model": "smollm2", "messages": messages, "max_tokens": 8, "temperature": 0}
            plain = c.post("/v1/chat/completions", json=body)
            assert plain.status_code == 200, plain.text
            answer = plain.json()
            assert answer["choices"][0]["message"]["content"].strip()
            # An answer that is not streamed is asked for whole, and comes with the upstream's usage.
            assert answer["usage"]["completion_tokens"] >= 1 and answer["usage"]["prompt_tokens"] > 5
            # In a stream it reports no usage (it ignores `stream_options`): the completion tokens are
            # counted by chunk, and the prompt's stay 0.
            streamed = c.post("/v1/chat/completions", json={**body, "stream": True})
            chunks = _sse(streamed.text)
            text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
            assert text.strip() and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
            # It would ignore a schema without a word: refused here, naming the flag.
            schema = {"type": "json_object"}
            refused = c.post("/v1/chat/completions", json={**body, "response_format": schema})
            assert refused.status_code == 400 and "--upstream-supports" in refused.text
            session = c.get("/v1/sessions").json()["data"][0]
        # Declared to serve the Responses API, it has no such route: the operator's mistake, a 502 saying so.
        gw = _gateway(make_server, [url], served_model_name="smollm2", upstream_supports=["responses"])
        with client(gw, timeout=120) as c:
            missing = c.post(
                "/v1/responses", json={"model": "smollm2", "input": "hi", "max_output_tokens": 2}
            )
    assert missing.status_code == 502 and missing.json()["error"]["code"] == "upstream_error", missing.text
    assert "no /responses route (404" in missing.json()["error"]["message"]
    assert session["requests"] == 2
    assert session["usage"] == {
        "prompt_tokens": answer["usage"]["prompt_tokens"],
        "completion_tokens": 2 * answer["usage"]["completion_tokens"],
    }


COLOUR = {
    "type": "json_schema",
    "json_schema": {
        "name": "colour",
        "schema": {
            "type": "object",
            "properties": {"colour": {"type": "string", "maxLength": 20}},
            "required": ["colour"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.model
def test_structured_answers_are_checked_against_their_schema(
    tmp_path: Path,
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    model_server: Any,
    api_key: str,
) -> None:
    body = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 40, "temperature": 0}
    # An upstream that enforces the schema (this project's llama engine): the answer passes the check.
    gw = _model_gateway(make_server, model_server, api_key, "response_format")
    with client(gw, timeout=120) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        plain = c.post("/v1/chat/completions", json={**body, "model": model, "response_format": COLOUR})
        assert plain.status_code == 200, plain.text
        assert set(json.loads(plain.json()["choices"][0]["message"]["content"])) == {"colour"}
        streamed = c.post(
            "/v1/chat/completions", json={**body, "model": model, "response_format": COLOUR, "stream": True}
        )
        deltas = [ch["choices"][0]["delta"] for ch in _sse(streamed.text) if ch["choices"]]
        contents = [d["content"] for d in deltas if d.get("content")]
        assert len(contents) == 1 and set(json.loads(contents[0])) == {"colour"}  # held back, sent whole
    # llama-cpp-python's server: this version refuses `json_schema` (a 500, passed on as the upstream's
    # error) and enforces `json_object` with a grammar, which the check then confirms.
    with llama_cpp_server(tmp_path / "llama_cpp_server.log", key=UP) as url:
        gw = _gateway(make_server, [url], served_model_name="smollm2", upstream_supports=["response_format"])
        with client(gw, timeout=120) as c:
            body = {**body, "model": "smollm2"}
            refused = c.post("/v1/chat/completions", json={**body, "response_format": COLOUR})
            obj = c.post("/v1/chat/completions", json={**body, "response_format": {"type": "json_object"}})
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "upstream_error"
    assert "response_format" in refused.json()["error"]["message"] and UP not in refused.text
    assert obj.status_code == 200, obj.text
    assert isinstance(json.loads(obj.json()["choices"][0]["message"]["content"]), dict)


@pytest.mark.parametrize(
    ("whole", "why"),
    [
        ({"error": {"message": f"overloaded (key {UP})"}}, "The upstream failed: overloaded (key ***)"),
        ({"object": "chat.completion"}, "The upstream's answer has no `choices` list."),
    ],
)
def test_a_whole_answer_that_is_not_one_is_an_upstream_error(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
    whole: dict[str, Any],
    why: str,
) -> None:
    upstream = stub(200, whole=whole)
    gw = _gateway(make_server, [upstream.base_url])
    with client(gw) as c:
        answer = c.post("/v1/chat/completions", json=CHAT)
    assert upstream.streamed == [False]
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_error"
    assert answer.json()["error"]["message"] == why  # the upstream key it echoed is cut out


def test_an_upstream_that_ignores_the_format_is_caught(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
) -> None:
    # Declared to enforce response_format, it answers prose anyway: nothing of it reaches the tenant.
    liar = stub(200)
    gw = _gateway(make_server, [liar.base_url], upstream_supports=["response_format"])
    with client(gw) as c:
        plain = c.post("/v1/chat/completions", json={**CHAT, "response_format": COLOUR})
        streamed = c.post("/v1/chat/completions", json={**CHAT, "response_format": COLOUR, "stream": True})
        as_text = c.post("/v1/chat/completions", json=CHAT)  # no format: its prose is the answer
    assert plain.status_code == 502
    error = plain.json()["error"]
    assert error["code"] == "upstream_error"
    assert "does not match the request's response_format (it is not JSON" in error["message"]
    events = _sse(streamed.text)
    assert "error" in events[-1] and "response_format" in events[-1]["error"]["message"]
    assert not [e for e in events if e.get("choices") and e["choices"][0]["delta"].get("content")]
    assert as_text.json()["choices"][0]["message"]["content"] == "Blue is a colour."


def _call(name: str, arguments: str) -> list[dict[str, Any]]:
    """A tool call as an upstream streams it: its head, then its arguments in two pieces."""
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}
    cut = len(arguments) // 2
    return [{"tool_calls": [head]}] + [
        {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        for piece in (arguments[:cut], arguments[cut:])
    ]


@pytest.mark.parametrize(
    ("deltas", "choice", "why"),
    [
        (_call("get_weather", '{"city": "Paris"}'), None, None),
        (_call("get_time", '{"city": "Paris"}'), None, "it called `get_time`, which is not one of"),
        (_call("get_weather", '{"town": "Paris"}'), None, "'city' is a required property"),
        (_call("get_weather", '{"city": 7}'), None, "at city: 7 is not of type 'string'"),
        (_call("get_weather", '{"city": "Par'), None, "are not JSON"),
        (_call("get_weather", '{"city": "Paris"}'), "none", "`tool_choice` is `none`"),
        (None, "required", "it made no call"),
    ],
)
def test_an_upstreams_tool_calls_are_checked_against_the_tools(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
    deltas: list[dict[str, Any]] | None,
    choice: str | None,
    why: str | None,
) -> None:
    upstream = stub(200, deltas=deltas)
    gw = _gateway(make_server, [upstream.base_url], upstream_supports=["tools"])
    body = {**CHAT, "tools": [WEATHER]} | ({"tool_choice": choice} if choice else {})
    with client(gw) as c:
        plain = c.post("/v1/chat/completions", json=body)
        streamed = c.post("/v1/chat/completions", json={**body, "stream": True})
    assert upstream.streamed == [False, True]  # each asked for as the tenant asked: whole, then streamed
    events = _sse(streamed.text)
    if why is None:
        assert plain.status_code == 200, plain.text
        call = plain.json()["choices"][0]["message"]["tool_calls"][0]
        assert (call["id"], call["function"]["arguments"]) == ("call_1", '{"city": "Paris"}')
        sent = [
            d for e in events if e.get("choices") for d in e["choices"][0]["delta"].get("tool_calls") or ()
        ]
        assert len(sent) == 1 and sent[0]["function"] == call["function"]  # held, then sent whole
        return
    assert plain.status_code == 502 and plain.json()["error"]["code"] == "upstream_error"
    assert (
        why in plain.json()["error"]["message"]
        and "--upstream-supports tools" in plain.json()["error"]["message"]
    )
    assert "error" in events[-1] and why in events[-1]["error"]["message"]
    assert not [e for e in events if e.get("choices") and e["choices"][0]["delta"].get("tool_calls")]


def test_an_upstream_sending_only_comments_meets_the_read_timeout(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
) -> None:
    # A comment every 0.2 s keeps the socket busy: the timeout counts the time without an event.
    upstream = stub(200, pings=0.2)
    gw = _gateway(make_server, [upstream.base_url], upstream_timeout=1.0)
    with client(gw, timeout=30) as c:
        started = time.monotonic()
        streamed = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        took = time.monotonic() - started
    assert streamed.status_code == 200
    events = _sse(streamed.text)
    assert "error" in events[-1] and "1 s (--upstream-timeout)" in events[-1]["error"]["message"]
    assert 1.0 <= took < 4.0, took  # on time: not the 20 s the comments would have lasted


def test_a_name_repeated_in_every_delta_is_one_name(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
) -> None:
    # llama-cpp-python's server repeats the call's id, type and name in each of its deltas.
    head = {"index": 0, "id": "call_1", "type": "function"}
    deltas = [
        {"tool_calls": [{**head, "function": {"name": "get_weather", "arguments": piece}}]}
        for piece in ('{"city": ', '"Paris"}')
    ]
    upstream = stub(200, deltas=deltas)
    gw = _gateway(make_server, [upstream.base_url], upstream_supports=["tools"])
    with client(gw) as c:
        streamed = c.post("/v1/chat/completions", json={**CHAT, "tools": [WEATHER], "stream": True})
    assert streamed.status_code == 200
    sent = [
        d
        for e in _sse(streamed.text)
        if e.get("choices")
        for d in e["choices"][0]["delta"].get("tool_calls") or ()
    ]
    assert [(d["function"]["name"], d["function"]["arguments"]) for d in sent] == [
        ("get_weather", '{"city": "Paris"}')
    ]


def test_a_tool_schema_that_is_not_one_is_refused_before_anything_is_sent(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
) -> None:
    upstream = stub(200)
    gw = _gateway(make_server, [upstream.base_url], upstream_supports=["tools"])
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "no-such-type"}}}
    with client(gw) as c:
        answer = c.post("/v1/chat/completions", json={**CHAT, "tools": [bad]})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "tools[0].function.parameters"
    assert upstream.hits == 0


@pytest.mark.model
def test_logprobs_come_from_the_upstream(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    model_server: Any,
    api_key: str,
) -> None:
    gw = _model_gateway(make_server, model_server, api_key, "logprobs")
    headers = {"Authorization": f"Bearer {api_key}"}
    with client(gw, timeout=120) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        # A seed: the upstream decodes the whole prompt each time, so the same request gives the same numbers.
        chat = {
            "model": model,
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": 6,
            "temperature": 0,
            "seed": 7,
            "logprobs": True,
            "top_logprobs": 2,
        }
        completion = {
            "model": model,
            "prompt": "The sky is",
            "max_tokens": 5,
            "temperature": 0,
            "seed": 7,
            "logprobs": 2,
        }
        for path, body in (("/chat/completions", chat), ("/completions", completion)):
            direct = httpx.post(model_server.base_url + path, json=body, headers=headers, timeout=120).json()
            through = c.post("/v1" + path, json=body).json()
            streamed = c.post("/v1" + path, json={**body, "stream": True})
            want, got = direct["choices"][0]["logprobs"], through["choices"][0]["logprobs"]
            if path == "/chat/completions":
                pieces = [
                    p
                    for ch in _sse(streamed.text)
                    if ch["choices"] and ch["choices"][0]["logprobs"]
                    for p in ch["choices"][0]["logprobs"]["content"]
                ]
                for entries in (got["content"], pieces):
                    assert [e["token"] for e in entries] == [e["token"] for e in want["content"]]
                    assert [e["logprob"] for e in entries] == pytest.approx(
                        [e["logprob"] for e in want["content"]], abs=1e-4
                    )
                    assert [len(e["top_logprobs"]) for e in entries] == [2] * len(entries)
            else:
                pieces = [
                    t
                    for ch in _sse(streamed.text)
                    if ch["choices"][0]["logprobs"]
                    for t in ch["choices"][0]["logprobs"]["tokens"]
                ]
                assert got["tokens"] == want["tokens"] == pieces
                assert got["token_logprobs"] == pytest.approx(want["token_logprobs"], abs=1e-4)
                assert got["text_offset"] == want["text_offset"]
            assert through["usage"]["completion_tokens"] == direct["usage"]["completion_tokens"]


@pytest.mark.model
def test_tool_calls_come_from_the_upstream(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    model_server: Any,
    api_key: str,
) -> None:
    gw = _model_gateway(make_server, model_server, api_key, "tools")
    headers = {"Authorization": f"Bearer {api_key}"}
    with client(gw, timeout=120) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [WEATHER],
            "tool_choice": "required",
            "max_tokens": 200,
            "temperature": 0,
            "seed": 3,
        }
        direct = httpx.post(
            model_server.base_url + "/chat/completions", json=body, headers=headers, timeout=120
        )
        through = c.post("/v1/chat/completions", json=body)
        streamed = c.post("/v1/chat/completions", json={**body, "stream": True})

    def calls(message: dict[str, Any]) -> list[tuple[str, Any]]:
        return [
            (t["function"]["name"], json.loads(t["function"]["arguments"])) for t in message["tool_calls"]
        ]

    want = direct.json()["choices"][0]
    got = through.json()["choices"][0]
    assert want["finish_reason"] == got["finish_reason"] == "tool_calls"
    assert calls(got["message"]) == calls(want["message"]) and calls(got["message"])[0][0] == "get_weather"
    assert got["message"]["content"] is None
    assert got["message"]["tool_calls"][0]["id"].startswith("call_")
    # Streamed: OpenAI's tool-call deltas, passed on; put together they are the same calls.
    chunks = [ch for ch in _sse(streamed.text) if ch["choices"]]
    pieces: list[dict[str, Any]] = [
        {"function": {"name": "", "arguments": ""}} for _ in want["message"]["tool_calls"]
    ]
    for chunk in chunks:
        for delta in chunk["choices"][0]["delta"].get("tool_calls") or ():
            function = pieces[delta["index"]]["function"]
            function["name"] += delta.get("function", {}).get("name") or ""
            function["arguments"] += delta.get("function", {}).get("arguments") or ""
    assert calls({"tool_calls": pieces}) == calls(want["message"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.model
def test_responses_tool_calls_and_formats_come_from_the_upstream(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    model_server: Any,
    api_key: str,
) -> None:
    gw = _model_gateway(make_server, model_server, api_key, "responses", "tools", "response_format")
    headers = {"Authorization": f"Bearer {api_key}"}
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}
    with client(gw, timeout=120) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        body = {
            "model": model,
            "input": "What is the weather in Paris?",
            "tools": [tool],
            "tool_choice": "required",
            "max_output_tokens": 200,
            "temperature": 0,
        }
        direct = httpx.post(model_server.base_url + "/responses", json=body, headers=headers, timeout=120)
        through = c.post("/v1/responses", json=body)
        streamed = c.post("/v1/responses", json={**body, "stream": True})
        schema = COLOUR["json_schema"]
        fmt = {"format": {"type": "json_schema", "name": schema["name"], "schema": schema["schema"]}}
        colour = c.post(
            "/v1/responses",
            json={
                "model": model,
                "input": "Name a colour.",
                "text": fmt,
                "max_output_tokens": 40,
                "temperature": 0,
            },
        )

    def calls(output: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(i["name"], json.loads(i["arguments"])) for i in output if i["type"] == "function_call"]

    want = calls(direct.json()["output"])
    assert through.status_code == 200, through.text
    assert calls(through.json()["output"]) == want and want[0][0] == "get_weather"
    assert through.json()["output"][0]["call_id"].startswith("call_")
    events = _sse(streamed.text)
    assert calls(events[-1]["response"]["output"]) == want
    pieces: dict[int, str] = {}
    for e in events:
        if e["type"] == "response.function_call_arguments.delta":
            pieces[e["output_index"]] = pieces.get(e["output_index"], "") + e["delta"]
    assert [json.loads(pieces[k]) for k in sorted(pieces)] == [args for _, args in want]
    assert colour.status_code == 200, colour.text
    assert set(json.loads(colour.json()["output"][0]["content"][0]["text"])) == {"colour"}


# -- every promise whatever the upstream honours (#36) -----------------------------------------------------

WORDS = [{"content": f" w{k}"} for k in range(40)]  # an upstream that ignores every token limit


def test_a_token_limit_the_upstream_ignores_is_enforced_here(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
) -> None:
    upstream = stub(200, deltas=WORDS)
    gw = _gateway(make_server, [upstream.base_url])
    with client(gw) as c:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        del body["max_tokens"]
        answer = c.post("/v1/chat/completions", json={**body, "max_completion_tokens": 5})
        chunks = _sse(answer.text)
        text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
        assert text == "".join(w["content"] for w in WORDS[:5])
        assert [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]][-1] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 5
        # Sent as max_tokens, which every OpenAI-compatible server honours (llama-cpp-python's ignores the
        # other name).
        assert upstream.bodies[-1]["max_tokens"] == 5 and "max_completion_tokens" not in upstream.bodies[-1]
        # The session counted what was relayed, not what the upstream would have gone on to write.
        assert c.get("/v1/sessions").json()["data"][0]["usage"]["completion_tokens"] == 5


def test_the_0_0_x_min_tokens_works_in_front_of_any_upstream(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
    upstreams: list[LocalServer],
) -> None:
    # The 0.0.x methods send `min_tokens: 1` on their users' behalf: without `--upstream-supports vllm`
    # it is not forwarded, and the gateway checks it on the answer itself.
    gw = _gateway(make_server, [upstreams[0].base_url])
    with client(gw) as c:
        assert c.post("/v1/chat/completions", json={**CHAT, "min_tokens": 1}).status_code == 200
        more = c.post("/v1/chat/completions", json={**CHAT, "min_tokens": 2})
        assert more.status_code == 400 and more.json()["error"]["param"] == "min_tokens"
    with nCompass(api_key=KEY, base_url=gw.base_url) as legacy:
        assert legacy.complete_prompt("Hello", max_tokens=4, stream=False)
    empty = stub(200, deltas=[])
    gw = _gateway(make_server, [empty.base_url])
    with client(gw) as c:
        whole = c.post("/v1/chat/completions", json={**CHAT, "min_tokens": 1})
        assert whole.status_code == 502 and "min_tokens: 1" in whole.json()["error"]["message"]
        assert "min_tokens" not in empty.bodies[-1]
        streamed = c.post("/v1/chat/completions", json={**CHAT, "min_tokens": 1, "stream": True})
        assert "min_tokens: 1" in _sse(streamed.text)[-1]["error"]["message"]
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200  # no floor asked: an empty answer


def test_a_named_tool_choice_answered_with_two_calls_is_the_upstreams_error(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
) -> None:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    two = [{"tool_calls": [{"index": k, "id": f"call_{k}", **call}]} for k in range(2)]
    gw = _gateway(make_server, [stub(200, deltas=two).base_url], upstream_supports=["tools"])
    named = {"type": "function", "function": {"name": "get_weather"}}
    with client(gw) as c:
        answer = c.post("/v1/chat/completions", json={**CHAT, "tools": [WEATHER], "tool_choice": named})
        assert answer.status_code == 502, answer.text
        assert "called exactly once" in answer.json()["error"]["message"]
        assert c.post("/v1/chat/completions", json={**CHAT, "tools": [WEATHER]}).status_code == 200  # auto


def test_an_upstream_down_at_boot_leaves_the_gateway_starting_then_serving(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    stub: Callable[..., _StubUpstream],
    spawn_server: Callable[..., ServerProcess],
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    gw = _gateway(make_server, [url], start_timeout=0.5, wait_for_model=False)
    with client(gw) as c:
        time.sleep(1.2)  # past --start-timeout: the gateway stays up, starting
        assert c.get("/v1/deployment").json()["state"] == "starting"
        # Its model's name until it has learned the upstream's: a client told it keeps working after.
        assert c.get("/v1/models").json()["data"][0]["id"] == "upstream"
        waiting = c.post("/v1/chat/completions", json={**CHAT, "model": "upstream"})
        assert waiting.status_code == 503 and waiting.headers["Retry-After"]
        assert f"no upstream is healthy ({url}: " in waiting.json()["error"]["message"]  # which, and why
        stub(200, port=port)
        assert wait_for(lambda: c.get("/v1/deployment").json()["state"] == "running", 15)
        assert c.get("/v1/models").json()["data"][0]["id"] == "synthetic"  # learned
        for name in ("upstream", "synthetic"):
            assert c.post("/v1/chat/completions", json={**CHAT, "model": name}).status_code == 200, name
        assert c.post("/v1/chat/completions", json={**CHAT, "model": "other"}).status_code == 404
    # `ncompass serve` itself does not exit: it waits for its upstream, saying so.
    proc = spawn_server(
        "--engine", "openai", "--upstream", f"http://127.0.0.1:{free_port()}/v1", "--start-timeout", "0.5",
        "--api-key", KEY,
    )  # fmt: skip
    time.sleep(2)
    assert proc.proc.poll() is None, proc.output()
    assert "No upstream is healthy yet" in proc.output() and "GGUF" not in proc.output()
    with proc.client(KEY) as c:
        assert c.get("/v1/deployment").json()["state"] == "starting"


def test_a_client_that_hangs_up_on_a_whole_answer_cancels_it_upstream(
    make_server: Callable[..., LocalServer], spawn_server: Callable[..., ServerProcess]
) -> None:
    # One request at a time upstream, and 50 tokens take it 10 s: a second request is a 429 while the
    # first still generates there.
    slow = _spawn_upstream(spawn_server, "--synthetic-token-rate", "5", "--max-queue-per-key", "1")
    gw = _gateway(make_server, [slow.base_url])
    auth = {"Authorization": f"Bearer {KEY}"}
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 50}, headers=auth, timeout=1)

    def upstream_free() -> bool:
        direct = httpx.post(
            slow.base_url + "/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {UP}"},
            timeout=10,
        )
        return direct.status_code == 200

    # The upstream stopped when the client hung up, well before the 10 s its whole answer takes.
    assert wait_for(upstream_free, 4)
    assert time.monotonic() - started < 6


@pytest.mark.model
def test_the_0_0_x_api_and_the_cli_in_front_of_llama_cpp_pythons_server(
    tmp_path: Path, make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    with llama_cpp_server(tmp_path / "llama_cpp_server.log", key=UP) as url:
        # No name given: the gateway learns the upstream's. This server honours `min_tokens`, and needs
        # it: it answers a prompt it has just answered with no token at all (the seed's hello world asks
        # one prompt three times), which the 0.0.x methods' `min_tokens: 1` prevents once forwarded.
        gw = _gateway(make_server, [url], upstream_supports=["min_tokens"])
        for name in ("hello_world.py", "chat.py"):  # the seed's two examples, migrated
            ran = run_example(name, KEY, gw.base_url, timeout=240)
            assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
        env.update(NCOMPASS_API_KEY=KEY, NCOMPASS_BASE_URL=gw.base_url)
        cli = str(Path(sys.executable).with_name("ncompass"))
        for command in ("complete", "chat"):
            args = [cli, command, "Name a colour.", "--max-tokens", "5"]
            ran_cli = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
            assert ran_cli.returncode == 0 and ran_cli.stdout.strip(), ran_cli.stderr
        with NCompass(api_key=KEY, base_url=gw.base_url) as check:
            assert check.sessions.list(status="active") == []  # each stopped the session it started
        with client(gw, timeout=120) as c:
            # llama-cpp-python's server ignores `max_completion_tokens`: sent as `max_tokens`, and cut here.
            body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "temperature": 0}
            for stream in (False, True):
                answer = c.post(
                    "/v1/chat/completions",
                    json={**body, "model": "upstream", "max_completion_tokens": 5, "stream": stream},
                )
                assert answer.status_code == 200, answer.text
                if stream:
                    chunks = _sse(answer.text)
                    assert (
                        sum(1 for ch in chunks if ch["choices"] and ch["choices"][0]["delta"].get("content"))
                        <= 5
                    )
                else:
                    assert answer.json()["usage"]["completion_tokens"] <= 5
            # It cannot batch (a made-up empty second choice for `n: 2`, a 500 for a list prompt): one
            # request per choice, each a real answer, the usage summed (the prompt counted once).
            listed = c.post(
                "/v1/completions",
                json={
                    "model": "upstream",
                    "prompt": ["The sky is", "Grass is"],
                    "max_tokens": 5,
                    "temperature": 0.7,
                },
            ).json()
            assert [ch["index"] for ch in listed["choices"]] == [0, 1]
            assert all(ch["text"].strip() for ch in listed["choices"]), listed
            two = c.post(
                "/v1/chat/completions", json={**body, "model": "upstream", "max_tokens": 6, "n": 2}
            ).json()
            assert [ch["index"] for ch in two["choices"]] == [0, 1]
            assert all(ch["message"]["content"] and ch["finish_reason"] for ch in two["choices"]), two
            one = c.post("/v1/chat/completions", json={**body, "model": "upstream", "max_tokens": 6}).json()
            assert two["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]
