"""Against a server without nCompass's lifecycle API: one clear error, and the OpenAI calls keep working.

The plain server is llama-cpp-python's own OpenAI server (``python -m llama_cpp.server``), an engine
nobody here wrote, serving the same SmolLM2 GGUF file. The base-URL-lacks-``/v1`` case runs against the
project's own server, where the same route under ``<base>/v1`` answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import close, llama_cpp_server, make_client, resolve
from ncompass_openai import BaseURLError, LifecycleAPIUnavailableError, NCompass, nCompass

pytestmark = pytest.mark.model  # the plain server loads the real model
KEY = "nc-test-plain-server-key"


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI server on a free port; yields its base URL (with ``/v1``)."""
    with llama_cpp_server(tmp_path_factory.mktemp("plain") / "llama_cpp_server.log") as url:
        yield url


def _assert_plain_server_error(exc: LifecycleAPIUnavailableError, base_url: str) -> None:
    message = str(exc)
    assert base_url in message
    assert "does not have nCompass's lifecycle API" in message
    assert "NCOMPASS_BASE_URL" in message and "ncompass serve" in message
    assert exc.suggested_base_url is None
    assert exc.status_code == 404
    assert KEY not in message


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.deployment.status(),
        lambda c: c.deployment.start(),
        lambda c: c.sessions.start(),
        lambda c: c.sessions.list(),
        lambda c: c.sessions.retrieve("sess_0123"),
        lambda c: c.deployment.bookings.list(),
    ],
    ids=[
        "deployment.status",
        "deployment.start",
        "sessions.start",
        "sessions.list",
        "sessions.retrieve",
        "bookings",
    ],
)
async def test_lifecycle_calls_name_the_missing_api(kind: str, call: Any, plain_server: str) -> None:
    client = make_client(kind, api_key=KEY, base_url=plain_server, max_retries=0)
    try:
        with pytest.raises(LifecycleAPIUnavailableError) as info:
            await resolve(call(client))
        _assert_plain_server_error(info.value, plain_server)
    finally:
        await close(client)


def test_the_openai_calls_and_the_0_0_x_completions_keep_working(plain_server: str) -> None:
    client = NCompass(api_key=KEY, base_url=plain_server)
    try:
        model = client.resolve_model()
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0
        )
        assert reply.choices[0].message.content
        assert client.complete_prompt("The sky is", max_tokens=8, stream=False, temperature=0)
        assert "".join(client.complete_prompt("The sea is", max_tokens=8, temperature=0))
    finally:
        client.close()


def test_the_0_0_x_start_session_raises_it(plain_server: str) -> None:
    with nCompass(api_key=KEY, base_url=plain_server) as client:
        with pytest.raises(LifecycleAPIUnavailableError) as info:
            client.start_session()
        _assert_plain_server_error(info.value, plain_server)


def _cli(*args: str, base_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=KEY, NCOMPASS_BASE_URL=base_url)
    return subprocess.run(
        [sys.executable, "-m", "ncompass_openai", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("args", [("model", "status"), ("session", "start"), ("book", "list")])
def test_the_cli_prints_it_as_its_one_line(args: tuple[str, ...], plain_server: str) -> None:
    proc = _cli(*args, base_url=plain_server)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: The server at " + plain_server)
    assert "lifecycle API" in lines[0] and "Traceback" not in proc.stderr


def test_batch_run_without_a_session_on_a_plain_server(plain_server: str, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [
        {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "temperature": 0}},
        {"custom_id": "text", "method": "POST", "url": "/v1/completions",
         "body": {"prompt": "The sky is", "max_tokens": 4, "temperature": 0}},
    ]  # fmt: skip
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    # With a session (the default) it stops at the lifecycle API, before any request is sent.
    refused = _cli("batch", "run", str(source), "-o", str(out), base_url=plain_server)
    assert refused.returncode == 1 and "lifecycle API" in refused.stderr and "--no-session" in refused.stderr
    assert out.read_text() == ""
    proc = _cli("batch", "run", str(source), "-o", str(out), "--no-session", "--json", base_url=plain_server)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["succeeded"], summary["session_id"], summary["billed_seconds"]) == (2, None, None)
    records = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["chat"]["response"]["body"]["choices"][0]["message"]["content"]
    assert records["text"]["response"]["body"]["choices"][0]["text"]
    assert KEY not in proc.stdout + proc.stderr + refused.stderr


def test_nccli_prints_it_too(plain_server: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=KEY, NCOMPASS_BASE_URL=plain_server)
    script = Path(sys.executable).with_name("nccli-start-session")
    proc = subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "does not have nCompass's lifecycle API" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- a base URL that lacks /v1 (the project's own server, which has the routes under /v1) -------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_base_url_without_v1_is_named_as_the_cause(kind: str, server: Any, api_key: str) -> None:
    client = make_client(kind, api_key=api_key, base_url=server.url, max_retries=0)
    try:
        with pytest.raises(LifecycleAPIUnavailableError) as info:
            await resolve(client.deployment.status())
    finally:
        await close(client)
    assert info.value.suggested_base_url == server.url + "/v1"
    message = str(info.value)
    assert f"The base URL {server.url} lacks `/v1`" in message
    assert f"to {server.url}/v1" in message


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("call", ["models", "chat", "chat without model", "completion"])
async def test_a_base_url_without_v1_is_named_for_inference_too(
    kind: str, call: str, server: Any, api_key: str
) -> None:
    client = make_client(kind, api_key=api_key, base_url=server.url, max_retries=0)
    messages = [{"role": "user", "content": "Hi"}]
    try:
        with pytest.raises(BaseURLError) as info:
            if call == "models":
                await resolve(client.models.list())
            elif call == "chat":
                await resolve(client.chat.completions.create(model="m", messages=messages, max_tokens=2))
            elif call == "chat without model":  # the model is looked up first: GET /models
                await resolve(client.chat.completions.create(messages=messages, max_tokens=2))
            else:
                await resolve(client.completions.create(model="m", prompt="Hi", max_tokens=2))
    finally:
        await close(client)
    assert info.value.suggested_base_url == server.url + "/v1"
    assert info.value.status_code == 404  # still openai's NotFoundError for code that catches that
    assert f"The base URL {server.url} lacks `/v1`" in str(info.value)
    assert f"to {server.url}/v1" in str(info.value)


def test_the_cli_names_the_missing_v1_too(server: Any, api_key: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=api_key, NCOMPASS_BASE_URL=server.url)
    proc = subprocess.run(
        [sys.executable, "-m", "ncompass_openai", "model", "status"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1
    assert "lacks `/v1`" in proc.stderr and f"{server.url}/v1" in proc.stderr


def test_an_unknown_id_is_still_a_plain_not_found(server: Any, api_key: str) -> None:
    import openai

    client = NCompass(api_key=api_key, base_url=server.base_url)
    try:
        with pytest.raises(openai.NotFoundError) as info:
            client.sessions.retrieve("sess_doesnotexist")
        assert not isinstance(info.value, LifecycleAPIUnavailableError)
    finally:
        client.close()
