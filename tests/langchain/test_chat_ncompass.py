"""``ChatNCompass`` and ``NCompassLLM`` beyond LangChain's standard suites, on a real local server.

The nCompass parts: the environment (``NCOMPASS_*`` only), the key's model when none is named, tracing,
the session guard, refusals, secrets. A private synthetic server (one tenant) keeps session checks apart
from the rest of the run.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.load import dumps
from langchain_core.messages import AIMessageChunk, HumanMessage
from pydantic import ValidationError

from ncompass_openai import NCompass
from ncompass_openai.langchain import ChatNCompass, NCompassLLM
from ncompass_openai.server import LocalServer

KEY = "nc-langchain-test-key-0123456789"


@pytest.fixture(scope="module")
def local() -> Iterator[LocalServer]:
    srv = LocalServer(engine="synthetic", api_keys=[KEY], db=":memory:").start()
    yield srv
    # The implicit sessions the models' requests opened (some since replaced by an explicit one): stopped
    # or looked up here, so the billing guard has none left to stop at exit, when this server is gone.
    with NCompass(api_key=KEY, base_url=str(srv.base_url)) as client:
        for session in client.sessions.list():
            if session.status == "active":
                client.sessions.stop(session.id)
            else:
                client.sessions.retrieve(session.id)
    srv.stop()


@pytest.fixture
def env(local: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the environment configures the models; OPENAI_* points somewhere that would fail loudly."""
    monkeypatch.setenv("NCOMPASS_API_KEY", KEY)
    monkeypatch.setenv("NCOMPASS_BASE_URL", str(local.base_url))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hostile-openai-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-hostile")
    monkeypatch.setenv("OPENAI_PROXY", "http://127.0.0.1:9")


def sessions(local: LocalServer) -> list[Any]:
    with NCompass(api_key=KEY, base_url=str(local.base_url)) as client:
        return list(client.sessions.list())


def test_env_only_construction_ignores_openai_env(env: None) -> None:
    chat = ChatNCompass(max_tokens=8)
    assert chat.model_name is None  # the key's model, looked up on the first request
    assert chat.openai_api_key is None and chat.openai_proxy is None and chat.openai_organization is None
    reply = chat.invoke("Hello")
    assert reply.content
    assert reply.response_metadata["model_name"] == "synthetic"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 8
    # openai's Omit marker: the header is not sent (a str would be the hostile OPENAI_ORG_ID).
    assert not isinstance(chat.root_client.default_headers.get("OpenAI-Organization"), str)


def test_model_from_env_and_argument(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCOMPASS_MODEL", "synthetic")
    assert ChatNCompass().model_name == "synthetic"
    assert ChatNCompass(model="chosen").model_name == "chosen"
    assert NCompassLLM().model_name == "synthetic"


def test_tracing_names_the_provider_and_the_model(env: None) -> None:
    chat = ChatNCompass(max_tokens=4)
    params = chat._get_ls_params()
    assert params["ls_provider"] == "ncompass"
    assert (
        "ls_model_name" not in params
    )  # not known before the first request: no name rather than a wrong one
    chat.invoke("Hi")
    assert chat._get_ls_params()["ls_model_name"] == "synthetic"
    assert chat._get_ls_params(model="override")["ls_model_name"] == "override"
    assert ChatNCompass(model="named")._get_ls_params()["ls_model_name"] == "named"
    assert NCompassLLM(model="named")._get_ls_params()["ls_provider"] == "ncompass"


def test_a_model_override_reaches_the_server(env: None) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        ChatNCompass(max_tokens=4).invoke("Hi", model="another-model")
    assert caught.value.code == "model_not_found"
    assert "another-model" in str(caught.value)


def test_stream_reports_usage_by_default(env: None) -> None:
    chunks = list(ChatNCompass(max_tokens=6).stream("Tell me something."))
    assert len(chunks) > 2
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert isinstance(whole, AIMessageChunk)
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] == 6


@pytest.mark.anyio
async def test_async_stream_and_async_session(env: None, local: LocalServer) -> None:
    chat = ChatNCompass(max_tokens=6)
    async with chat.asession(idle_timeout=60, metadata={"job": "lc-async"}) as session:
        pieces = [chunk.content async for chunk in chat.astream("Tell me something.")]
        assert len(pieces) > 2 and "".join(str(p) for p in pieces)
        reply = await chat.ainvoke("Hi")
        assert reply.content
    (found,) = [s for s in sessions(local) if s.id == session.id]
    assert found.status == "stopped" and found.stop_reason == "client"
    assert found.requests == 2


def test_session_stops_when_the_block_raises(env: None, local: LocalServer) -> None:
    chat = ChatNCompass(max_tokens=4)
    with (
        pytest.raises(RuntimeError, match="boom"),
        chat.session(idle_timeout=60, max_duration=600) as session,
    ):
        chat.invoke("Hi")
        raise RuntimeError("boom")
    (found,) = [s for s in sessions(local) if s.id == session.id]
    assert found.status == "stopped" and found.stop_reason == "client"
    assert found.idle_timeout == 60 and found.max_duration == 600
    assert found.requests == 1 and found.billed_seconds > 0


def test_ensure_running(env: None) -> None:
    deployment = ChatNCompass().ensure_running(timeout=30)
    assert deployment.state == "running"


def test_completions_model(env: None) -> None:
    llm = NCompassLLM(max_tokens=5)
    text = llm.invoke("Once upon a time")
    assert isinstance(text, str) and text
    streamed = list(llm.stream("Once upon a time"))
    assert len(streamed) > 1
    with llm.session(idle_timeout=60) as session:
        assert llm.batch(["One", "Two"])
    assert session.id


def test_refused_openai_settings(env: None) -> None:
    for field, value in [
        ("openai_proxy", "http://proxy:3128"),
        ("openai_api_key", "sk-x"),
        ("openai_api_base", "http://x/v1"),
        ("http_socket_options", [(6, 1, 1)]),
    ]:
        with pytest.raises(ValidationError, match=f"`{field}` is an OpenAI setting"):
            ChatNCompass(**{field: value})
    with pytest.raises(ValidationError, match="`openai_proxy` is an OpenAI setting"):
        NCompassLLM(openai_proxy="http://proxy:3128")


def test_missing_key_says_what_to_do() -> None:
    with pytest.raises(ValidationError, match="NCOMPASS_API_KEY"):
        ChatNCompass()
    with pytest.raises(ValidationError, match="NCOMPASS_API_KEY"):
        NCompassLLM()


def test_key_stays_out_of_reprs_errors_and_serialisation(local: LocalServer) -> None:
    chat = ChatNCompass(api_key=KEY, base_url=str(local.base_url), model="synthetic")
    assert KEY not in repr(chat) and KEY not in str(chat)
    assert KEY not in dumps(chat)
    assert KEY not in repr(NCompassLLM(api_key=KEY, base_url=str(local.base_url)))
    with pytest.raises(ValidationError) as caught:
        ChatNCompass(api_key=KEY, base_url=str(local.base_url), n=0)
    assert KEY not in str(caught.value)


def test_image_input_is_refused_naming_the_field(env: None) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError, match="only text content parts"):
        ChatNCompass(max_tokens=4).invoke([HumanMessage(content=[{"type": "text", "text": "Hi"}, image])])


def test_import_without_the_extra_names_the_install_command() -> None:
    code = "import sys; sys.modules['langchain_openai'] = None; import ncompass_openai.langchain"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert "pip install 'ncompass-openai[langchain]'" in run.stderr


@pytest.mark.model
@pytest.mark.parametrize(
    "tool_choice",
    [
        "auto",
        "none",
        "required",
        "any",
        True,
        "get_weather",
        {"type": "function", "function": {"name": "get_weather"}},
    ],
    ids=["auto", "none", "required", "any", "true", "name", "dict"],
)
def test_every_tool_choice_langchain_sends(model_server: Any, api_key: str, tool_choice: Any) -> None:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}."

    chat = ChatNCompass(api_key=api_key, base_url=str(model_server.base_url), max_tokens=60, temperature=0)
    bound = chat.bind_tools([get_weather], tool_choice=tool_choice, parallel_tool_calls=False)
    reply = bound.invoke("What is the weather in Paris?")
    if tool_choice == "none":
        assert reply.tool_calls == [] and reply.content
    elif tool_choice == "auto":
        assert reply.tool_calls or reply.content
    else:
        (call,) = reply.tool_calls
        assert call["name"] == "get_weather" and set(call["args"]) == {"city"}


def test_one_model_in_two_event_loops_leaves_no_socket_open(local: LocalServer) -> None:
    # An async connection belongs to its loop: each asyncio.run gets its own pool, closed as that loop
    # shuts down (-X dev reports any socket left to the garbage collector).
    code = (
        "import asyncio, gc\n"
        "from ncompass_openai.langchain import ChatNCompass\n"
        f"chat = ChatNCompass(api_key={KEY!r}, base_url={str(local.base_url)!r}, max_tokens=3)\n"
        "for _ in range(2):\n"
        "    print(asyncio.run(chat.ainvoke('Hi')).content)\n"
        "    gc.collect()\n"
        "with chat.session(idle_timeout=60):\n"
        "    print(chat.invoke('Hi').content)\n"
    )
    run = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert len([line for line in run.stdout.splitlines() if line.strip()]) == 3
    assert "ResourceWarning" not in run.stderr and "unclosed" not in run.stderr, run.stderr


@pytest.mark.model
@pytest.mark.parametrize(("method", "strict"), [("json_schema", True), ("function_calling", None)])
def test_structured_output_methods(model_server: Any, api_key: str, method: str, strict: bool | None) -> None:
    from pydantic import BaseModel, Field

    class Pet(BaseModel):
        """A pet."""

        name: str = Field(max_length=20)
        species: str = Field(max_length=20)

    chat = ChatNCompass(api_key=api_key, base_url=str(model_server.base_url), max_tokens=80, temperature=0)
    pet = chat.with_structured_output(Pet, method=method, strict=strict).invoke("A pet, as JSON.")
    assert isinstance(pet, Pet) and pet.name and pet.species
