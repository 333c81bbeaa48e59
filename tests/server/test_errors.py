"""Every row of the protocol's error table (docs/protocol.md): status, OpenAI's error shape, headers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import openai
import pytest

from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer
from ncompass_openai.server.engines._base import EngineToken, GenerationControl, SequenceRequest
from ncompass_openai.server.engines.synthetic import SyntheticEngine

MODEL = "synthetic"
KEY = "nc-test-own-server-key-a"  # make_server's first tenant


def _error(response: httpx.Response, status: int, type_: str, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert isinstance(error["message"], str) and len(error["message"]) > 20
    if code is not None:
        assert error["code"] == code
    return dict(error)


@pytest.fixture
def raw(server: Any, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10) as c:
        yield c


# -- 400 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v1/completions", {"model": MODEL}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": 5}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "temperature": 9}, "temperature"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "stream": "yes"}, "stream"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "n": 100}, "n"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "logprobs": 2}, "logprobs"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "frobnicate": True}, "frobnicate"),
        (
            "/v1/completions",
            {"model": MODEL, "prompt": "x", "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        ("/v1/completions", {"model": MODEL, "prompt": []}, "prompt"),
        ("/v1/chat/completions", {"model": MODEL}, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, "messages"),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        (
            "/v1/chat/completions",
            # OpenAI's range is -2..2 (1 is honoured since the penalties are implemented).
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "presence_penalty": 2.5},
            "presence_penalty",
        ),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                "add_generation_prompt": True,
                "continue_final_message": True,
            },
            "continue_final_message",
        ),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "chat_template": "{% for m in messages %}",
            },
            "chat_template",
        ),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "chat_template": "{{ raise_exception('no users allowed') }}",
            },
            "chat_template",
        ),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "chat_template": "{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}",
            },
            "chat_template",
        ),
        ("/v1/sessions", {"idle_timeout": -1}, "idle_timeout"),
        ("/v1/sessions", {"idle_timeout": "soon"}, "idle_timeout"),
        ("/v1/deployment/bookings", {"start_at": time.time() + 10, "end_at": time.time() + 5}, "end_at"),
        ("/v1/deployment/bookings", {"start_at": "yesterday", "end_at": time.time() + 5}, "start_at"),
        ("/v1/deployment/bookings", {"start_at": time.time() - 100, "end_at": time.time() - 50}, "end_at"),
    ],
)
def test_400_names_the_field(raw: httpx.Client, route: str, body: dict[str, Any], param: str) -> None:
    error = _error(raw.post(route, json=body), 400, "invalid_request_error")
    assert error["param"] == param
    assert param.split(".")[0].split("[")[0] in error["message"]


def test_400_for_a_template_that_leaks_sandbox_is_never_500(raw: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "chat_template": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    }
    _error(raw.post("/v1/chat/completions", json=body), 400, "invalid_request_error")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
def test_400_malformed_json(raw: httpx.Client, content: bytes) -> None:
    response = raw.post("/v1/completions", content=content, headers={"content-type": "application/json"})
    error = _error(response, 400, "invalid_request_error")
    assert "JSON" in error["message"]


def test_400_query_values(raw: httpx.Client) -> None:
    assert _error(raw.get("/v1/sessions?status=paused"), 400, "invalid_request_error")["param"] == "status"
    assert _error(raw.get("/v1/sessions?limit=0"), 400, "invalid_request_error")["param"] == "limit"


def test_context_length_is_400(raw: httpx.Client) -> None:
    response = raw.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 10_000_000})
    error = _error(response, 400, "invalid_request_error", "context_length_exceeded")
    assert "max_tokens" in error["message"]


def test_openai_client_raises_bad_request(base_url: str, api_key: str) -> None:
    oai = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        oai.completions.create(model=MODEL, prompt="x", max_tokens=-1)
    assert "max_tokens" in str(info.value)


# -- 401 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Basic abc def"},
        {"Authorization": "Bearer"},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/models"), ("POST", "/v1/sessions"), ("GET", "/v1/deployment")]
)
def test_401_without_a_valid_key(server: Any, headers: dict[str, str], method: str, path: str) -> None:
    response = httpx.request(method, server.url + path, headers=headers, json={})
    _error(response, 401, "authentication_error", "invalid_api_key")


def test_401_message_never_echoes_the_key(server: Any) -> None:
    secret = "sk-this-must-not-be-echoed-12345"
    response = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert secret not in response.text


def test_bare_authorization_header_is_accepted(server: Any, api_key: str) -> None:
    response = httpx.get(server.url + "/v1/models", headers={"Authorization": api_key})
    assert response.status_code == 200


def test_openai_client_raises_authentication_error(base_url: str) -> None:
    oai = openai.OpenAI(api_key="nope", base_url=base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        oai.models.list()


# -- 404 ------------------------------------------------------------------------------------------


def test_404_unknown_route(raw: httpx.Client, server: Any) -> None:
    _error(raw.get("/v1/nothing-here"), 404, "not_found_error")
    _error(httpx.post(server.url + "/v2/whatever"), 404, "not_found_error")


def test_404_unknown_ids(raw: httpx.Client) -> None:
    _error(raw.get("/v1/sessions/sess_doesnotexist"), 404, "not_found_error", "session_not_found")
    _error(raw.post("/v1/sessions/sess_doesnotexist/stop"), 404, "not_found_error")
    _error(raw.delete("/v1/deployment/bookings/book_nope"), 404, "not_found_error", "booking_not_found")


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_404_unknown_model_like_openai(raw: httpx.Client, route: str) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}
    body.pop("messages" if route == "/v1/completions" else "prompt")
    error = _error(raw.post(route, json=body), 404, "not_found_error", "model_not_found")
    assert error["param"] == "model"
    assert "gpt-4o" in error["message"]
    _error(raw.get("/v1/models/gpt-4o"), 404, "not_found_error", "model_not_found")


def test_openai_client_raises_not_found(base_url: str, api_key: str) -> None:
    oai = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="not-a-model", messages=[{"role": "user", "content": "x"}])


# -- 413 ------------------------------------------------------------------------------------------


def test_413_body_too_large(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(max_body_bytes=2048)
    with client(srv) as c:
        big = {"model": MODEL, "prompt": "x" * 5000}
        _error(c.post("/v1/completions", json=big), 413, "invalid_request_error", "request_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
            yield b'{"model": "synthetic", "prompt": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        _error(c.post("/v1/completions", content=chunks()), 413, "invalid_request_error", "request_too_large")
        ok = c.post("/v1/completions", json={"model": MODEL, "prompt": "small", "max_tokens": 1})
        assert ok.status_code == 200


# -- 429 ------------------------------------------------------------------------------------------


def test_429_when_the_key_queue_is_full(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(max_queue_per_key=1, engine_instance=SyntheticEngine(delay=0.02))
    body = {"model": MODEL, "prompt": "slow", "max_tokens": 200, "stream": True}
    with client(srv) as c, client(srv) as c2, c.stream("POST", "/v1/completions", json=body) as first:
        assert first.status_code == 200
        lines = first.iter_lines()
        next(lines)
        response = c2.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 1})
        _error(response, 429, "rate_limit_error")
        assert 1 <= int(response.headers["retry-after"]) <= 120
        # The limit is per key: the other tenant is not affected.
        other = client(srv, key="nc-test-own-server-key-b")
        assert (
            other.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 1}).status_code
            == 200
        )
        other.close()


# -- 503 ------------------------------------------------------------------------------------------


def test_503_model_stopped(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(autostart=False)
    with client(srv) as c:
        assert c.get("/v1/deployment").json()["state"] == "stopped"
        for route, body in [
            ("/v1/completions", {"model": MODEL, "prompt": "x"}),
            ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
        ]:
            response = c.post(route, json=body)
            _error(response, 503, "model_not_running", "model_stopped")
            assert response.headers["x-should-retry"] == "false"
            assert "retry-after" not in response.headers


def test_503_model_starting_with_retry_after(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(cold_start=3.0, wait_for_model=False)
    with client(srv) as c:
        started = time.monotonic()
        response = c.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
        assert time.monotonic() - started < 1.0  # never blocks for the cold start
        _error(response, 503, "model_not_running", "model_starting")
        assert response.headers["x-should-retry"] == "true"
        assert 1 <= int(response.headers["retry-after"]) <= 120
        status = c.get("/v1/deployment").json()
        assert status["state"] == "starting"
        assert status["estimated_ready_at"] > time.time()


def test_openai_client_does_not_retry_a_stopped_model(make_server: Callable[..., LocalServer]) -> None:
    srv = make_server(autostart=False)
    oai = openai.OpenAI(api_key=KEY, base_url=srv.base_url, max_retries=3)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        oai.completions.create(model=MODEL, prompt="x")
    assert info.value.status_code == 503
    assert time.monotonic() - started < 1.5  # x-should-retry: false stops the client's retries


# -- 500 and errors after a stream began ----------------------------------------------------------


class _ExplodingEngine(SyntheticEngine):
    """Fails after a few tokens of any prompt that contains "boom": a stand-in for an engine bug."""

    def generate(
        self, take: Callable[[int], Sequence[SequenceRequest]], control: GenerationControl
    ) -> Iterator[EngineToken]:
        armed = threading.Event()

        def spy(free: int) -> Sequence[SequenceRequest]:
            sequences = take(free)
            if any("boom" in s.prompt for s in sequences):
                armed.set()
            return sequences

        for i, token in enumerate(super().generate(spy, control)):
            if armed.is_set() and i >= 3:
                raise RuntimeError("engine exploded")
            yield token


def test_500_and_the_server_stays_up(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(engine_instance=_ExplodingEngine())
    with client(srv) as c:
        response = c.post("/v1/completions", json={"model": MODEL, "prompt": "boom", "max_tokens": 20})
        error = _error(response, 500, "server_error")
        assert "exploded" not in error["message"]  # no internals leak
        ok = c.post("/v1/completions", json={"model": MODEL, "prompt": "fine", "max_tokens": 3})
        assert ok.status_code == 200


def test_error_after_stream_began_is_one_sse_event(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(engine_instance=_ExplodingEngine())
    body = {"model": MODEL, "prompt": "boom", "max_tokens": 20, "stream": True}
    with client(srv) as c, c.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line]
    assert events[-1] != "data: [DONE]"
    last = json.loads(events[-1].removeprefix("data: "))
    assert set(last) == {"error"}
    assert last["error"]["type"] == "server_error"
    assert all("error" not in json.loads(e.removeprefix("data: ")) for e in events[:-1])
    oai = openai.OpenAI(api_key=KEY, base_url=srv.base_url, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in oai.completions.create(model=MODEL, prompt="boom", max_tokens=20, stream=True):
            pass


def test_model_stopped_mid_request_is_503_not_500(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], own_keys: tuple[str, str]
) -> None:
    srv = make_server(api_keys=[own_keys[0]], engine_instance=SyntheticEngine(delay=0.02))
    with client(srv) as c, client(srv) as stopper:
        result: dict[str, httpx.Response] = {}

        def ask() -> None:
            result["r"] = c.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 500})

        worker = threading.Thread(target=ask)
        worker.start()
        deadline = time.monotonic() + 5
        while not srv.state.backend.inflight(srv.state.tenants.tenants[0].id) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert stopper.post("/v1/deployment/stop").status_code == 202
        worker.join(timeout=10)
    error = _error(result["r"], 503, "model_not_running", "model_stopped")
    assert result["r"].headers["x-should-retry"] == "false"
    assert "stopp" in error["message"]


@pytest.mark.model
def test_a_context_overflow_names_only_what_the_client_sent(real: openai.OpenAI, real_model: str) -> None:
    # A tool loop's history that fills the bundled model's 2048-token context by itself: no limit was sent,
    # so none is named; the fix is the history.
    turns = [{"role": "tool", "tool_call_id": f"call_{k}", "content": "sunny " * 300} for k in range(8)]
    history: list[Any] = [{"role": "user", "content": "Weather?"}, *turns]
    with pytest.raises(openai.BadRequestError) as info:
        real.chat.completions.create(model=real_model, messages=history)
    error = info.value.body
    assert (
        isinstance(error, dict)
        and error["code"] == "context_length_exceeded"
        and error["param"] == "messages"
    )
    assert "max_tokens" not in error["message"] and "earlier turns" in error["message"]
    # A prompt that fits, with a limit that does not: the limit sent is named, with the largest that fits.
    short = [{"role": "user", "content": "sunny " * 1500}]
    with pytest.raises(openai.BadRequestError) as info:
        real.chat.completions.create(model=real_model, messages=short, max_completion_tokens=1000)
    message = info.value.body["message"]  # type: ignore[index]
    assert "`max_completion_tokens` asks for 1000" in message and "to at most" in message
    assert "`max_tokens`" not in message
    # The Responses API names its own field.
    with pytest.raises(openai.BadRequestError) as info:
        real.responses.create(model=real_model, input="sunny " * 1500, max_output_tokens=1000)
    message = info.value.body["message"]  # type: ignore[index]
    assert "`max_output_tokens` asks for 1000" in message and info.value.body["param"] == "input"  # type: ignore[index]
