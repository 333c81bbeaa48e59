"""The fast text path (``_streaming``): SSE parsing, its error semantics and connection hygiene.

The misbehaving peers here are real HTTP servers on 127.0.0.1 (a raw socket server in a thread) that
send a broken SSE body on purpose: a stream without ``[DONE]``, a cut connection, an in-stream error,
a non-JSON event. The well-behaved cases also run against the package's local server.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import openai
import pytest

from ncompass_openai import StreamError, TruncatedStreamError
from ncompass_openai._streaming import (
    AsyncTextStream,
    TextStream,
    _SSEParser,
    open_async_text_stream,
    open_text_stream,
)

MODEL = "raw-model"
DECODERS = ["json", *(["orjson"] if importlib.util.find_spec("orjson") else [])]


@pytest.fixture(autouse=True, params=DECODERS)
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with each JSON decoder the fast path may use (orjson when installed, json)."""
    name = str(request.param)
    monkeypatch.setattr("ncompass_openai._streaming._loads", importlib.import_module(name).loads)
    return name


# -- a raw HTTP/1.1 peer ---------------------------------------------------------------------------


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def completion_event(text: str, *, chat: bool = False) -> bytes:
    if chat:
        choice: dict[str, object] = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        return _event({"id": "c", "object": "chat.completion.chunk", "model": MODEL, "choices": [choice]})
    choice = {"index": 0, "text": text, "finish_reason": None}
    return _event({"id": "c", "object": "text_completion", "model": MODEL, "choices": [choice]})


DONE = b"data: [DONE]\n\n"
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

Script = Callable[[socket.socket], None]


class RawSSEServer:
    """Answers ``GET /v1/models`` properly and every POST with ``script(conn)``; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict[str, str]] = []  # the headers of every POST, in order
        self.connections = 0
        self.closed = threading.Event()  # set when a peer hangs up
        self.open = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self.open += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            reader = conn.makefile("rb")
            while True:
                line = reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while True:
                    header = reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                reader.read(int(headers.get("content-length", 0)))
                if line.startswith(b"GET /v1/models"):
                    body = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(body), body)
                    )
                    continue
                self.requests.append(headers)
                self.script(conn)
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self.open -= 1
            self.closed.set()

    def close(self) -> None:
        self._stopped = True
        self._sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Script], RawSSEServer]]:
    servers: list[RawSSEServer] = []

    def make(script: Script) -> RawSSEServer:
        server = RawSSEServer(script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _stream(server: RawSSEServer, *, chat: bool = False) -> tuple[openai.OpenAI, TextStream]:
    client = openai.OpenAI(api_key="raw-key", base_url=server.base_url, max_retries=0)
    if chat:
        raw = client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    else:
        raw = client.completions.with_streaming_response.create(model=MODEL, prompt="hi", stream=True)
    return client, open_text_stream(raw.__enter__().http_response, chat=chat)


async def _astream(server: RawSSEServer) -> tuple[openai.AsyncOpenAI, AsyncTextStream]:
    client = openai.AsyncOpenAI(api_key="raw-key", base_url=server.base_url, max_retries=0)
    raw = client.completions.with_streaming_response.create(model=MODEL, prompt="hi", stream=True)
    response = await raw.__aenter__()
    return client, await open_async_text_stream(response.http_response, chat=False)


def _send(*events: bytes, terminate: bool = True) -> Script:
    def script(conn: socket.socket) -> None:
        conn.sendall(
            HEAD + b"".join(_chunk(event) for event in events) + (b"0\r\n\r\n" if terminate else b"")
        )
        if not terminate:
            conn.shutdown(socket.SHUT_RDWR)
            raise OSError("cut on purpose")

    return script


# -- the SSE parser --------------------------------------------------------------------------------


def _parse_in_pieces(body: bytes, size: int) -> list[bytes]:
    parser = _SSEParser()
    events: list[bytes] = []
    for i in range(0, len(body), size):
        events.extend(parser.feed(body[i : i + size]))
    events.extend(parser.close())
    return events


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_parser_handles_every_line_ending_and_split(newline: bytes, size: int) -> None:
    body = (
        b": a comment\n\n"
        b'event: message\ndata: {"a": 1}\n\n'
        b"data:nospace\n\n"
        b"id: 7\ndata: first\ndata: second\n\n"
        b"retry: 100\n\n"
        b"data: [DONE]\n\n"
    ).replace(b"\n", newline)
    assert _parse_in_pieces(body, size) == [b'{"a": 1}', b"nospace", b"first\nsecond", b"[DONE]"]


def test_parser_flushes_an_unterminated_last_event() -> None:
    assert _parse_in_pieces(b"data: x\n\ndata: [DONE]", 4) == [b"x", b"[DONE]"]


# -- stream semantics against a misbehaving peer ---------------------------------------------------


@pytest.mark.parametrize("chat", [False, True])
def test_stream_yields_each_new_piece_and_skips_empty_and_usage_chunks(
    raw_server: Callable[[Script], RawSSEServer], chat: bool
) -> None:
    role_only = _event(
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    )
    usage = _event({"object": "text_completion", "choices": [], "usage": {"completion_tokens": 3}})
    events = [
        *([role_only] if chat else []),
        completion_event("Hello", chat=chat),
        completion_event("", chat=chat),
        completion_event(", world", chat=chat),
        completion_event("!", chat=chat),
        usage,
        DONE,
    ]
    server = raw_server(_send(*events))
    client, stream = _stream(server, chat=chat)
    with client:
        assert list(stream) == ["Hello", ", world", "!"]


def test_stream_without_done_raises_truncated(raw_server: Callable[[Script], RawSSEServer]) -> None:
    server = raw_server(_send(completion_event("a"), completion_event("b")))
    client, stream = _stream(server)
    pieces = []
    with client, pytest.raises(TruncatedStreamError, match=r"\[DONE\]"):
        for piece in stream:
            pieces.append(piece)
    assert pieces == ["a", "b"]


def test_cut_connection_raises_truncated(raw_server: Callable[[Script], RawSSEServer]) -> None:
    server = raw_server(_send(completion_event("a"), terminate=False))
    client, stream = _stream(server)
    with client, pytest.raises(TruncatedStreamError) as info:
        list(stream)
    assert info.value.__cause__ is not None  # the transport error is kept for debugging


def test_in_stream_error_raises_api_error(raw_server: Callable[[Script], RawSSEServer]) -> None:
    error = {"message": "the engine crashed", "type": "server_error", "param": None, "code": "engine_error"}
    server = raw_server(_send(completion_event("a"), _event({"error": error})))
    client, stream = _stream(server)
    pieces = []
    with client, pytest.raises(openai.APIError, match="the engine crashed") as info:
        for piece in stream:
            pieces.append(piece)
    assert pieces == ["a"]
    assert info.value.code == "engine_error"
    assert info.value.body == error


def test_non_json_event_raises_stream_error(raw_server: Callable[[Script], RawSSEServer]) -> None:
    server = raw_server(_send(completion_event("a"), b"data: {not json\n\n", DONE))
    client, stream = _stream(server)
    with client, pytest.raises(StreamError, match="not JSON"):
        list(stream)


def test_finished_stream_returns_its_connection_to_the_pool(
    raw_server: Callable[[Script], RawSSEServer],
) -> None:
    server = raw_server(_send(completion_event("a"), completion_event("b"), DONE))
    client = openai.OpenAI(api_key="raw-key", base_url=server.base_url, max_retries=0)
    with client:
        for _ in range(3):
            raw = client.completions.with_streaming_response.create(model=MODEL, prompt="hi", stream=True)
            assert list(open_text_stream(raw.__enter__().http_response, chat=False)) == ["a", "b"]
    # Reading on past [DONE] to the end of the body keeps the connection reusable.
    assert server.connections == 1


def _endless(conn: socket.socket) -> None:
    conn.sendall(HEAD)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        conn.sendall(_chunk(completion_event("tick")))
        time.sleep(0.005)


def _wait_closed(server: RawSSEServer) -> None:
    deadline = time.monotonic() + 5
    while server.open and time.monotonic() < deadline:
        time.sleep(0.01)


def test_break_closes_the_connection(
    raw_server: Callable[[Script], RawSSEServer], client_connections: Callable[[int], int]
) -> None:
    server = raw_server(_endless)
    client, stream = _stream(server)
    with client:
        for piece in stream:
            assert piece == "tick"
            break
        del stream
        assert client_connections(server.port) == 0
        _wait_closed(server)
        assert server.open == 0


def test_unread_dropped_stream_closes_the_connection(
    raw_server: Callable[[Script], RawSSEServer], client_connections: Callable[[int], int]
) -> None:
    server = raw_server(_endless)
    client, stream = _stream(server)
    with client:
        assert client_connections(server.port) == 1
        del stream  # never iterated
        assert client_connections(server.port) == 0


def test_close_and_context_manager_close_the_connection(
    raw_server: Callable[[Script], RawSSEServer], client_connections: Callable[[int], int]
) -> None:
    server = raw_server(_endless)
    client, stream = _stream(server)
    with client:
        assert next(stream) == "tick"
        stream.close()
        stream.close()  # idempotent
        assert client_connections(server.port) == 0
        assert list(stream) == []
        _, second = _stream(server)
        with second:
            assert next(second) == "tick"
        assert client_connections(server.port) == 0


@pytest.mark.anyio
async def test_async_stream_semantics(raw_server: Callable[[Script], RawSSEServer]) -> None:
    ok = raw_server(_send(completion_event("a"), completion_event("b"), DONE))
    client, stream = await _astream(ok)
    async with client:
        assert [piece async for piece in stream] == ["a", "b"]

    truncated = raw_server(_send(completion_event("a")))
    client, stream = await _astream(truncated)
    async with client:
        with pytest.raises(TruncatedStreamError):
            async for _ in stream:
                pass

    error = {"message": "overloaded", "type": "server_error", "code": "overloaded"}
    failing = raw_server(_send(completion_event("a"), _event({"error": error})))
    client, stream = await _astream(failing)
    async with client:
        with pytest.raises(openai.APIError, match="overloaded"):
            async for _ in stream:
                pass


@pytest.mark.anyio
async def test_async_aclose_closes_the_connection(
    raw_server: Callable[[Script], RawSSEServer], client_connections: Callable[[int], int]
) -> None:
    server = raw_server(_endless)
    client, stream = await _astream(server)
    async with client:
        async with stream:
            assert await stream.__anext__() == "tick"
        assert client_connections(server.port) == 0


def test_fast_path_keeps_auth_retries_and_idempotency_key(
    raw_server: Callable[[Script], RawSSEServer],
) -> None:
    from ncompass_openai import NCompass

    attempts = []

    def starting_then_ok(conn: socket.socket) -> None:
        attempts.append(1)
        if len(attempts) == 1:  # a cold start: openai retries it after Retry-After
            body = json.dumps(
                {"error": {"message": "starting", "type": "model_not_running", "code": "model_starting"}}
            ).encode()
            conn.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 0\r\n"
                b"x-should-retry: true\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
        else:
            _send(completion_event("ok"), DONE)(conn)

    server = raw_server(starting_then_ok)
    with NCompass(api_key="nc-raw-key-0123456789", base_url=server.base_url, max_retries=2) as client:
        assert list(client.complete_prompt("hi", max_tokens=3)) == ["ok"]
    first, second = server.requests
    assert first["authorization"] == second["authorization"] == "Bearer nc-raw-key-0123456789"
    assert first["idempotency-key"] and first["idempotency-key"] == second["idempotency-key"]
    assert second.get("x-stainless-retry-count") == "1"
