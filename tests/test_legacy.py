"""The 0.0.x methods of NCompass / AsyncNCompass, sync and async twins, against the local server."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from ncompass_openai import (
    AsyncNCompass,
    AsyncTextStream,
    MissingAPIKeyError,
    ModelNotRunningError,
    NCompass,
    TextStream,
    nCompass,
)
from ncompass_openai._legacy import CHAT_BATCH_CONCURRENCY

pytestmark = pytest.mark.anyio

Client = NCompass | AsyncNCompass


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def make_client(flavor: str, **kwargs: Any) -> AsyncIterator[Client]:
    if flavor == "sync":
        with NCompass(**kwargs) as client:
            yield client
    else:
        async with AsyncNCompass(**kwargs) as aclient:
            yield aclient


async def call(client: Client, name: str, *args: Any, **kwargs: Any) -> Any:
    """Calls a method of either twin and returns its result (awaited for the async one)."""
    result = getattr(client, name)(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def collect(stream: TextStream | AsyncTextStream) -> list[str]:
    if isinstance(stream, AsyncTextStream):
        return [piece async for piece in stream]
    return list(stream)


def stop_active(api_key: str, base_url: str) -> None:
    """Stops a session another test may have left active, so counters start from zero."""
    with NCompass(api_key=api_key, base_url=base_url) as client:
        for session in client.sessions.list(status="active"):
            client.sessions.stop(session.id)


@pytest.fixture
def stopped_server() -> Iterator[Any]:
    """A server of its own whose model is stopped (autostart off), with a 1 s cold start."""
    from ncompass_openai.server import LocalServer

    keys = ["nc-legacy-stopped-0123456789"]
    with LocalServer(engine="synthetic", api_keys=keys, autostart=False, cold_start=1.0) as srv:
        yield srv


USER = [{"role": "user", "content": "How do I make my model faster?"}]


# -- sessions and the model ------------------------------------------------------------------------


async def test_start_session_waits_for_model_and_stop_session_returns_true(
    flavor: str, api_key: str, base_url: str
) -> None:
    stop_active(api_key, base_url)
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        session = await call(client, "start_session")
        assert session.status == "active"
        assert await call(client, "model_is_running") is True
        assert await call(client, "stop_session") is True
        assert (await call(client.sessions, "retrieve", session.id)).status == "stopped"


async def test_model_is_running_is_false_when_the_server_is_unreachable(flavor: str) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # reserved, never listening: connections are refused
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        async with make_client(flavor, api_key="nc-unreachable", base_url=url, max_retries=0) as client:
            assert await call(client, "model_is_running") is False
    finally:
        sock.close()


async def test_wait_until_model_running_on_a_stopped_model_says_at_once_how_to_start_it(
    flavor: str, stopped_server: Any
) -> None:
    # It used to sleep out its timeout and raise DeploymentTimeoutError ("wait longer"): a stopped model
    # never comes up by itself, so the wait now fails at once (0.0.x's errors were exceptions too).
    key = stopped_server.api_keys[0]
    async with make_client(flavor, api_key=key, base_url=stopped_server.base_url) as client:
        assert await call(client, "model_is_running") is False
        wall = time.monotonic()
        with pytest.raises(ModelNotRunningError) as info:
            await call(client, "wait_until_model_running", timeout=15)
        wall = time.monotonic() - wall
    message = str(info.value)
    for hint in ("nccli-start-model", "nccli-model-status", "ncompass model start", "stopped"):
        assert hint in message
    assert wall < 1.5


async def test_start_session_on_a_stopped_model_opens_no_session(flavor: str, stopped_server: Any) -> None:
    # It used to open the session, wait out the timeout and stop it (20 s billed for 20 s of waiting).
    key = stopped_server.api_keys[0]
    async with make_client(flavor, api_key=key, base_url=stopped_server.base_url) as client:
        before = await call(client.sessions, "list", limit=100)
        with pytest.raises(ModelNotRunningError):
            await call(client, "start_session", timeout=20)
        assert await call(client.sessions, "list", limit=100) == before  # not one session, not one second


async def test_start_session_can_start_the_model(flavor: str, stopped_server: Any) -> None:
    key = stopped_server.api_keys[0]
    async with make_client(flavor, api_key=key, base_url=stopped_server.base_url) as client:
        session = await call(client, "start_session", timeout=30, start_model=True)
        try:
            assert session.status == "active"
            assert await call(client, "model_is_running") is True
        finally:
            await call(client, "stop_session")
            await call(client.deployment, "stop")
            for _ in range(100):
                if (await call(client.deployment, "status")).state == "stopped":
                    break
                time.sleep(0.05)


async def test_wait_until_model_running_follows_a_cold_start(flavor: str, stopped_server: Any) -> None:
    key = stopped_server.api_keys[0]
    async with make_client(flavor, api_key=key, base_url=stopped_server.base_url) as client:
        await call(client.deployment, "start")
        started = time.monotonic()
        await call(client, "wait_until_model_running", timeout=30)
        waited = time.monotonic() - started
        assert 0.5 <= waited < 5  # the 1 s cold start was waited for, and seen within a few polls
        assert await call(client, "model_is_running") is True


# -- completions -----------------------------------------------------------------------------------


async def test_complete_prompt_streams_each_new_piece_once(flavor: str, api_key: str, base_url: str) -> None:
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        stream = await call(client, "complete_prompt", "Hello there", max_tokens=16, temperature=0)
        assert isinstance(stream, AsyncTextStream if flavor == "async" else TextStream)
        pieces = await collect(stream)
        whole = await call(
            client, "complete_prompt", "Hello there", max_tokens=16, temperature=0, stream=False
        )
    assert len(pieces) > 1
    assert all(isinstance(piece, str) and piece for piece in pieces)
    assert isinstance(whole, str) and whole
    # New pieces only: together they are exactly the finished text (0.0.x semantics).
    assert "".join(pieces) == whole


async def test_complete_prompt_list_is_one_batched_request_in_input_order(
    flavor: str, api_key: str, base_url: str
) -> None:
    stop_active(api_key, base_url)
    prompts = ["What does the fox say?", "What does the cow say?", "What does the owl say?"]
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        session = await call(client.sessions, "start")
        batch = await call(client, "complete_prompt", prompts, max_tokens=8, temperature=0, stream=False)
        after_batch = await call(client.sessions, "retrieve", session.id)
        singles = [
            await call(client, "complete_prompt", p, max_tokens=8, temperature=0, stream=False)
            for p in prompts
        ]
        await call(client, "stop_session")
    assert after_batch.requests == 1  # one request for the whole list
    assert after_batch.usage.completion_tokens == 3 * 8
    assert isinstance(batch, list) and len(batch) == 3
    assert batch == singles
    assert len(set(batch)) == 3


async def test_other_openai_and_vllm_parameters_pass_through(
    flavor: str, api_key: str, base_url: str
) -> None:
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        seeded = [
            await call(
                client, "complete_prompt", "Hi", max_tokens=12, stream=False, seed=7, top_k=5, min_p=0.05
            )
            for _ in range(2)
        ]
        assert seeded[0] == seeded[1] and isinstance(seeded[0], str)
        two = await call(client, "complete_prompt", "Hi", max_tokens=4, stream=False, n=2, seed=3)
        assert isinstance(two, list) and len(two) == 2
        # A parameter the server does not know is sent (in extra_body) and refused by name, not dropped.
        with pytest.raises(openai.BadRequestError, match="not_a_real_param"):
            await call(client, "complete_prompt", "Hi", max_tokens=4, stream=False, not_a_real_param=1)
        with pytest.raises(openai.BadRequestError, match="not_a_real_param"):
            await call(client, "complete_prompt", "Hi", max_tokens=4, not_a_real_param=1)


# -- chat ------------------------------------------------------------------------------------------


async def test_complete_chat_streams_and_answers(flavor: str, api_key: str, base_url: str) -> None:
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        stream = await call(client, "complete_chat", USER, max_tokens=12, temperature=0)
        pieces = await collect(stream)
        whole = await call(client, "complete_chat", USER, True, max_tokens=12, temperature=0, stream=False)
    assert len(pieces) > 1 and all(pieces)
    assert "".join(pieces) == whole


async def test_complete_chat_batch_runs_concurrently_and_keeps_input_order(
    flavor: str, api_key: str, base_url: str
) -> None:
    conversations = [
        [{"role": "user", "content": f"Question number {i}?"}] for i in range(CHAT_BATCH_CONCURRENCY + 3)
    ]
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        batch = await call(client, "complete_chat", conversations, max_tokens=6, temperature=0, stream=False)
        singles = [
            await call(client, "complete_chat", c, max_tokens=6, temperature=0, stream=False)
            for c in conversations
        ]
    assert batch == singles
    assert len(set(batch)) == len(conversations)


async def test_chat_template_and_add_generation_prompt_reach_the_server(
    flavor: str, api_key: str, base_url: str
) -> None:
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    messages = [*USER, {"role": "assistant", "content": "Ah, the age old question."}]
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        own = await call(
            client, "complete_chat", messages, False, template, max_tokens=8, temperature=0, stream=False
        )
        default = await call(client, "complete_chat", messages, max_tokens=8, temperature=0, stream=False)
        continued = await call(
            client, "complete_chat", messages, False, max_tokens=8, stream=False, continue_final_message=True
        )
        assert isinstance(own, str) and isinstance(default, str) and isinstance(continued, str)
        assert own != default  # another prompt was rendered, so another deterministic answer
        with pytest.raises(openai.BadRequestError):
            await call(
                client, "complete_chat", messages, chat_template="{% for m in messages %}", stream=False
            )


# -- printing and connection hygiene ---------------------------------------------------------------


async def test_print_prompt_prints_pieces_then_a_newline(
    flavor: str, api_key: str, base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        whole = await call(client, "complete_prompt", "Tell me", max_tokens=10, temperature=0, stream=False)
        capsys.readouterr()
        stream = await call(client, "complete_prompt", "Tell me", max_tokens=10, temperature=0)
        assert await call(client, "print_prompt", stream) is None
        assert capsys.readouterr().out == whole + "\n"
        await call(client, "print_prompt", whole)  # a finished text prints as is
        assert capsys.readouterr().out == whole + "\n"


async def test_breaking_out_of_streams_leaves_no_connection_open(
    flavor: str, api_key: str, base_url: str, server: Any, client_connections: Callable[[int], int]
) -> None:
    async with make_client(flavor, api_key=api_key, base_url=base_url, model="synthetic") as client:
        for _ in range(10):
            if isinstance(client, NCompass):
                for piece in client.complete_prompt("Go on", max_tokens=5_000):
                    assert piece
                    break
            else:
                async with await client.complete_prompt("Go on", max_tokens=5_000) as stream:
                    async for piece in stream:
                        assert piece
                        break
        # Each abandoned stream closed its connection; at most one idle pooled connection remains.
        assert client_connections(server.port) <= 1
        assert isinstance(
            await call(client, "complete_prompt", "Still fine?", max_tokens=3, stream=False), str
        )


# -- the 0.0.x constructor -------------------------------------------------------------------------


def test_ncompass_takes_the_0_0_x_constructor(
    monkeypatch: pytest.MonkeyPatch, api_key: str, base_url: str
) -> None:
    monkeypatch.setenv("NCOMPASS_BASE_URL", base_url)
    positional = nCompass(api_key)
    assert isinstance(positional, NCompass)
    assert positional.model_is_running() is True
    positional.close()
    monkeypatch.setenv("MY_TEAM_KEY", api_key)
    with nCompass(custom_env_var="MY_TEAM_KEY") as from_env:
        assert from_env.model_is_running() is True
        copied = from_env.with_options(max_retries=1)
        assert type(copied) is nCompass and copied.max_retries == 1
    monkeypatch.setenv("NCOMPASS_API_KEY", api_key)
    with nCompass() as default_env:
        assert default_env.model_is_running() is True
    with pytest.raises(ValueError, match="api_key"):
        nCompass(api_key, custom_env_var="MY_TEAM_KEY")
    monkeypatch.delenv("NCOMPASS_API_KEY")
    with pytest.raises(MissingAPIKeyError, match="NCOMPASS_API_KEY") as info:
        nCompass()
    assert api_key not in str(info.value)


async def test_a_stopped_model_fails_at_the_call_not_in_the_stream(flavor: str, stopped_server: Any) -> None:
    key = stopped_server.api_keys[0]
    async with make_client(
        flavor, api_key=key, base_url=stopped_server.base_url, model="synthetic"
    ) as client:
        for stream in (True, False):
            with pytest.raises(ModelNotRunningError, match="nccli-start-model"):
                await call(client, "complete_prompt", "Hi", max_tokens=3, stream=stream)
            with pytest.raises(ModelNotRunningError, match="ncompass model start"):
                await call(client, "complete_chat", USER, max_tokens=3, stream=stream)


async def test_a_failing_conversation_fails_the_chat_batch_with_its_own_error(
    flavor: str, api_key: str, base_url: str
) -> None:
    ok = [*USER, {"role": "assistant", "content": "Sure"}]
    refused = USER  # continue_final_message needs a final assistant message: the server answers 400
    async with make_client(flavor, api_key=api_key, base_url=base_url) as client:
        with pytest.raises(openai.BadRequestError, match="continue_final_message"):
            await call(
                client, "complete_chat", [ok, refused, ok], False, max_tokens=3, stream=False,
                continue_final_message=True,
            )  # fmt: skip


_NEVER_CLOSED = """
import atexit, gc, os, sys
sys.path.insert(0, {tests!r})
gc.disable()  # the client's reference cycles are left for the interpreter's last collection, as at exit
from _helpers import open_connections
from ncompass_openai import nCompass

def script():  # the 0.0.x way: a client that is never closed
    client = nCompass()
    client.start_session()
    client.print_prompt(client.complete_prompt("hi", max_tokens=5, stream=True))
    client.stop_session()

script()
print("open before exit:", open_connections({port}))
atexit._run_exitfuncs()  # what the interpreter runs at exit, before its last garbage collection
print("open after exit:", open_connections({port}))
"""


def test_a_client_never_closed_is_closed_at_exit(api_key: str, base_url: str) -> None:
    # Without it, the pooled connection is finalized by the last garbage collection in arbitrary order,
    # which Python 3.13 reports as `ResourceWarning: unclosed <socket.socket ...>`.
    port = int(base_url.rsplit(":", 1)[1].split("/", 1)[0])
    code = _NEVER_CLOSED.format(tests=str(Path(__file__).parent), port=port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=api_key, NCOMPASS_BASE_URL=base_url)
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "open before exit: 1" in proc.stdout  # the connection really was left open by the script
    assert "open after exit: 0" in proc.stdout, proc.stdout
    assert "ResourceWarning" not in proc.stderr, proc.stderr
