"""NCompass / AsyncNCompass: configuration, environment isolation, copies, model resolution, requests."""

from __future__ import annotations

import inspect
import ssl
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from _helpers import Recorder, close, make_client, resolve
from ncompass_openai import (
    DEFAULT_BASE_URL,
    AsyncNCompass,
    MissingAPIKeyError,
    NCompass,
    NCompassError,
    ServerUnreachableError,
)
from ncompass_openai._compat import httpx

pytestmark = pytest.mark.anyio

KINDS = ["sync", "async"]
SECRET = "nc-secret-key-that-must-never-show-0000"
HOSTILE_OPENAI_ENV = {
    "OPENAI_API_KEY": "sk-hostile-openai-key",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "OPENAI_ORG_ID": "org-hostile",
    "OPENAI_PROJECT_ID": "proj-hostile",
    "OPENAI_ADMIN_KEY": "sk-admin-hostile",
    "OPENAI_WEBHOOK_SECRET": "whsec-hostile",
    "OPENAI_CUSTOM_HEADERS": "X-Hostile: yes\nAuthorization: Bearer sk-hostile-header",
}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(kind: str, base_url: str, api_key: str) -> AsyncIterator[NCompass | AsyncNCompass]:
    c = make_client(kind, api_key=api_key, base_url=base_url)
    yield c
    await close(c)


# -- configuration -----------------------------------------------------------------------------------


def test_no_key_names_the_argument_and_the_variable(kind: str) -> None:
    with pytest.raises(MissingAPIKeyError) as info:
        make_client(kind)
    assert "api_key" in str(info.value)
    assert "NCOMPASS_API_KEY" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_openai_api_key_is_not_an_ncompass_key(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    with pytest.raises(MissingAPIKeyError):
        make_client(kind)


def test_env_configures_the_client(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCOMPASS_API_KEY", SECRET)
    monkeypatch.setenv("NCOMPASS_BASE_URL", "http://127.0.0.1:1234/v1")
    monkeypatch.setenv("NCOMPASS_MODEL", "env-model")
    monkeypatch.setenv("NCOMPASS_MAX_RETRIES", "7")
    monkeypatch.setenv("NCOMPASS_TIMEOUT", "30")
    monkeypatch.setenv("NCOMPASS_READ_TIMEOUT", "12")
    c = make_client(kind)
    assert c.api_key == SECRET
    assert str(c.base_url) == "http://127.0.0.1:1234/v1/"
    assert c._model == "env-model"
    assert c.max_retries == 7
    assert isinstance(c.timeout, httpx.Timeout)
    assert (c.timeout.connect, c.timeout.read, c.timeout.write) == (5.0, 12.0, 30.0)


def test_each_client_reads_the_environment_as_it_is_then(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The settings read from the environment are reused only while NCOMPASS_* stays the same.
    monkeypatch.setenv("NCOMPASS_API_KEY", SECRET)
    monkeypatch.setenv("NCOMPASS_MODEL", "first-model")
    assert make_client(kind)._model == "first-model"
    monkeypatch.setenv("NCOMPASS_MODEL", "second-model")
    monkeypatch.setenv("NCOMPASS_MAX_RETRIES", "2")
    second = make_client(kind)
    assert (second._model, second.max_retries) == ("second-model", 2)
    monkeypatch.delenv("NCOMPASS_MODEL")
    assert make_client(kind)._model is None
    monkeypatch.setenv("NCOMPASS_MAX_RETRIES", "-1")
    with pytest.raises(ValueError, match="max_retries"):
        make_client(kind)


def test_arguments_beat_env(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCOMPASS_API_KEY", "nc-from-env")
    monkeypatch.setenv("NCOMPASS_BASE_URL", "http://127.0.0.1:1234/v1")
    monkeypatch.setenv("NCOMPASS_MODEL", "env-model")
    monkeypatch.setenv("NCOMPASS_MAX_RETRIES", "7")
    c = make_client(
        kind, api_key=SECRET, base_url="http://127.0.0.1:4321/v1", model="arg-model", max_retries=1
    )
    assert c.api_key == SECRET
    assert str(c.base_url) == "http://127.0.0.1:4321/v1/"
    assert c._model == "arg-model"
    assert c.max_retries == 1


def test_defaults(kind: str) -> None:
    c = make_client(kind, api_key=SECRET)
    assert str(c.base_url) == DEFAULT_BASE_URL + "/"
    assert c.max_retries == 4
    assert isinstance(c.timeout, httpx.Timeout)
    # A silent stream fails after 60 s, not openai's 600 s.
    assert c.timeout.read == 60.0
    assert c._ncompass_config.idle_timeout == 900.0


def test_custom_env_var_reads_the_key_from_that_variable(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_NCOMPASS_KEY", SECRET)
    monkeypatch.setenv("NCOMPASS_API_KEY", "nc-other")
    assert make_client(kind, custom_env_var="MY_NCOMPASS_KEY").api_key == SECRET


def test_custom_env_var_missing_names_that_variable(kind: str) -> None:
    with pytest.raises(MissingAPIKeyError, match="MY_MISSING_KEY"):
        make_client(kind, custom_env_var="MY_MISSING_KEY")


def test_api_key_and_custom_env_var_together_is_an_error(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_NCOMPASS_KEY", SECRET)
    with pytest.raises(ValueError, match="not both"):
        make_client(kind, api_key=SECRET, custom_env_var="MY_NCOMPASS_KEY")


@pytest.mark.parametrize(
    ("env", "value"),
    [("NCOMPASS_TIMEOUT", "soon"), ("NCOMPASS_MAX_RETRIES", "-1"), ("NCOMPASS_READ_TIMEOUT", "x")],
)
def test_bad_setting_names_the_variable(
    kind: str, monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match="NCOMPASS_") as info:
        make_client(kind, api_key=SECRET)
    assert env.removeprefix("NCOMPASS_").lower() in str(info.value)


def test_base_url_must_be_http(kind: str) -> None:
    with pytest.raises(ValueError, match="http"):
        make_client(kind, api_key=SECRET, base_url="ftp://example.com/v1")


def test_openai_only_options_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="provider"):
        make_client(kind, api_key=SECRET, provider=object())


def test_repr_and_errors_never_show_the_key(kind: str) -> None:
    c = make_client(kind, api_key=SECRET)
    assert SECRET not in repr(c)
    assert SECRET not in str(c)
    assert SECRET not in repr(c._ncompass_config)
    assert "NCompass(" in repr(c)


def test_tls_is_verified(kind: str) -> None:
    c = make_client(kind, api_key=SECRET)
    pool = c._client._transport._pool  # the default transport openai builds
    context = pool._ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_explicit_timeout_object_is_kept(kind: str) -> None:
    timeout = httpx.Timeout(3.0, read=7.0)
    assert make_client(kind, api_key=SECRET, timeout=timeout).timeout == timeout


def test_read_timeout_argument(kind: str) -> None:
    c = make_client(kind, api_key=SECRET, read_timeout=5)
    assert isinstance(c.timeout, httpx.Timeout)
    assert c.timeout.read == 5.0


def test_http_client_is_used(kind: str) -> None:
    http = httpx.Client() if kind == "sync" else httpx.AsyncClient()
    c = make_client(kind, api_key=SECRET, http_client=http)
    assert c._client is http


# -- copy / with_options -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [NCompass, AsyncNCompass])
def test_copy_signature(cls: type[NCompass] | type[AsyncNCompass]) -> None:
    # Every constructor argument can be overridden in copy(), as openai's own clients guarantee.
    init = inspect.signature(cls.__init__).parameters
    copy = inspect.signature(cls.copy).parameters
    exclude = {"self", "openai_kwargs", "_strict_response_validation"}
    missing = [name for name in init if name not in exclude and name not in copy]
    assert not missing, f"copy() lacks {missing}"
    assert cls.with_options is cls.copy


def test_copy_keeps_every_setting(kind: str) -> None:
    http = httpx.Client() if kind == "sync" else httpx.AsyncClient()
    c = make_client(
        kind,
        api_key=SECRET,
        base_url="http://127.0.0.1:4321/v1",
        model="m1",
        organization="org-1",
        project="proj-1",
        websocket_base_url="ws://127.0.0.1:4321/v1",
        timeout=33.0,
        read_timeout=11.0,
        max_retries=3,
        idle_timeout=120.0,
        default_headers={"X-Test": "1"},
        default_query={"q": "1"},
        http_client=http,
    )
    for copied in (c.copy(), c.with_options()):
        assert type(copied) is type(c)
        assert copied.api_key == SECRET
        assert str(copied.base_url) == "http://127.0.0.1:4321/v1/"
        assert copied._model == "m1"
        assert (copied.organization, copied.project) == ("org-1", "proj-1")
        assert copied.websocket_base_url == "ws://127.0.0.1:4321/v1"
        assert copied.timeout == c.timeout
        assert isinstance(copied.timeout, httpx.Timeout) and copied.timeout.read == 11.0
        assert copied.max_retries == 3
        assert copied._ncompass_config.idle_timeout == 120.0
        assert copied._custom_headers["X-Test"] == "1"
        assert copied._custom_query == {"q": "1"}
        assert copied._client is http
        assert copied._idempotency_header == "Idempotency-Key"


def test_copy_overrides(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c = make_client(kind, api_key=SECRET, model="m1", max_retries=3)
    monkeypatch.setenv("OTHER_KEY_VAR", "nc-other-key")
    d = c.with_options(model="m2", max_retries=0, timeout=9.0, read_timeout=2.0, idle_timeout=None)
    assert (d._model, d.max_retries) == ("m2", 0)
    assert isinstance(d.timeout, httpx.Timeout) and (d.timeout.read, d.timeout.write) == (2.0, 9.0)
    assert d._ncompass_config.idle_timeout is None
    assert c.copy(custom_env_var="OTHER_KEY_VAR").api_key == "nc-other-key"
    with pytest.raises(ValueError, match="not both"):
        c.copy(api_key="a", custom_env_var="OTHER_KEY_VAR")


# -- environment isolation against the server ------------------------------------------------------------


async def test_hostile_openai_env_changes_nothing(
    kind: str, monkeypatch: pytest.MonkeyPatch, base_url: str, api_key: str
) -> None:
    for name, value in HOSTILE_OPENAI_ENV.items():
        monkeypatch.setenv(name, value)
    recorder = Recorder()
    c = make_client(kind, api_key=api_key, base_url=base_url, http_client=recorder.http_client(kind))
    completion = await resolve(c.completions.create(prompt="hello", max_tokens=3))
    copied = c.with_options(max_retries=1)
    await resolve(copied.sessions.list(limit=1))
    await close(c)
    assert completion.choices
    assert len(recorder.requests) >= 2
    for request in recorder.requests:
        assert str(request.url).startswith(base_url)
        assert request.headers["authorization"] == f"Bearer {api_key}"
        for header in ("openai-organization", "openai-project", "x-hostile"):
            assert header not in request.headers
        assert "hostile" not in str(request.headers).lower()
    assert (c.organization, c.project, c.admin_api_key, c.webhook_secret) == (None, None, None, None)


# -- requests against the local server ---------------------------------------------------------------------


async def test_model_is_optional(client: NCompass | AsyncNCompass) -> None:
    completion = await resolve(client.completions.create(prompt="Say something", max_tokens=4))
    assert completion.object == "text_completion"
    assert len(completion.choices) == 1
    chat = await resolve(
        client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    )
    assert chat.choices[0].message.role == "assistant"
    assert completion.model == chat.model == await resolve(client.resolve_model())


async def test_streams_without_model(client: NCompass | AsyncNCompass) -> None:
    stream = await resolve(
        client.chat.completions.create(
            messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
        )
    )
    chunks = []
    chunks = [chunk async for chunk in stream] if isinstance(stream, openai.AsyncStream) else list(stream)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


async def test_explicit_model_is_sent_as_given(client: NCompass | AsyncNCompass) -> None:
    model = await resolve(client.resolve_model())
    completion = await resolve(client.completions.create(model=model, prompt="x", max_tokens=2))
    assert completion.model == model
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        await resolve(client.completions.create(model="no-such-model", prompt="x", max_tokens=2))


async def test_model_is_fetched_once(kind: str, base_url: str, api_key: str) -> None:
    recorder = Recorder()
    c = make_client(kind, api_key=api_key, base_url=base_url, http_client=recorder.http_client(kind))
    for _ in range(3):
        await resolve(c.completions.create(prompt="x", max_tokens=1))
    await close(c)
    assert [r.url.path for r in recorder.requests].count("/v1/models") == 1


def test_model_is_fetched_once_across_threads(base_url: str, api_key: str) -> None:
    recorder = Recorder()
    c = NCompass(api_key=api_key, base_url=base_url, http_client=recorder.http_client("sync"))
    barrier = threading.Barrier(8)
    seen: list[str] = []

    def work() -> None:
        barrier.wait()
        seen.append(c.resolve_model())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.close()
    assert len(seen) == 8 and len(set(seen)) == 1
    assert [r.url.path for r in recorder.requests].count("/v1/models") == 1


async def test_model_is_fetched_once_across_tasks(base_url: str, api_key: str) -> None:
    import anyio

    recorder = Recorder()
    c = AsyncNCompass(api_key=api_key, base_url=base_url, http_client=recorder.http_client("async"))
    seen: list[str] = []

    async def work() -> None:
        seen.append(await c.resolve_model())

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(work)
    await c.close()
    assert len(seen) == 8 and len(set(seen)) == 1
    assert [r.url.path for r in recorder.requests].count("/v1/models") == 1


async def test_idempotency_key_on_every_post(kind: str, base_url: str, api_key: str) -> None:
    recorder = Recorder()
    c = make_client(kind, api_key=api_key, base_url=base_url, http_client=recorder.http_client(kind))
    await resolve(c.completions.create(prompt="x", max_tokens=1))
    await resolve(c.completions.create(prompt="x", max_tokens=1))
    await resolve(c.deployment.status())
    await close(c)
    posts = [r for r in recorder.requests if r.method == "POST"]
    gets = [r for r in recorder.requests if r.method == "GET"]
    assert len(posts) == 2 and gets
    keys = [r.headers.get("idempotency-key") for r in posts]
    assert all(keys) and keys[0] != keys[1]
    assert all("idempotency-key" not in r.headers for r in gets)


async def test_requests_follow_a_changed_base_url(kind: str, base_url: str, api_key: str) -> None:
    # The client remembers each path's joined URL; a new base_url (openai's setter) must not reuse it.
    recorder = Recorder()
    c = make_client(kind, api_key=api_key, base_url=base_url, http_client=recorder.http_client(kind))
    await resolve(c.deployment.status())
    mirror = base_url.replace("127.0.0.1", "localhost")
    c.base_url = mirror
    await resolve(c.deployment.status())
    await close(c)
    urls = [str(r.url) for r in recorder.requests if r.url.path.endswith("/deployment")]
    assert urls == [base_url.rstrip("/") + "/deployment", mirror.rstrip("/") + "/deployment"]


async def test_server_replays_a_repeated_idempotency_key(client: NCompass | AsyncNCompass) -> None:
    # The same key on a second start answers the first start again: a retried start never acts twice.
    key = {"Idempotency-Key": "test-replayed-start-0001"}
    await resolve(_stop_active(client))
    first = await resolve(client.sessions.with_raw_response.start(extra_headers=key))
    started = first.parse()
    await resolve(client.sessions.stop(started.id))
    again = await resolve(client.sessions.with_raw_response.start(extra_headers=key))
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.parse().id == started.id
    active = await resolve(client.sessions.list(status="active"))
    assert active == []


async def _stop_active(client: Any) -> None:
    for session in await resolve(client.sessions.list(status="active")):
        await resolve(client.sessions.stop(session.id))


async def test_unknown_fields_are_kept(client: NCompass | AsyncNCompass) -> None:
    deployment = await resolve(client.deployment.status())
    assert deployment.model == await resolve(client.resolve_model())
    assert deployment.model_dump()["object"] == "deployment"


async def test_bad_key_is_openais_authentication_error(kind: str, base_url: str) -> None:
    c = make_client(kind, api_key="nc-not-a-tenant-key", base_url=base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await resolve(c.deployment.status())
    await close(c)
    assert "nc-not-a-tenant-key" not in str(info.value)


def test_errors_root() -> None:
    assert issubclass(NCompassError, openai.OpenAIError)


async def test_a_silent_stream_fails_after_the_read_timeout(kind: str) -> None:
    from ncompass_openai.server import LocalServer
    from ncompass_openai.server.engines.synthetic import SyntheticEngine

    key = "nc-test-slow-tenant-00000001"
    # Each decoding step of this engine takes 2 s: the stream is silent for 2 s between chunks.
    with LocalServer(engine_instance=SyntheticEngine(delay=2.0), api_keys=[key]) as srv:
        c = make_client(kind, api_key=key, base_url=srv.base_url, read_timeout=0.3, max_retries=0)
        began = time.monotonic()
        with pytest.raises((openai.APITimeoutError, httpx.ReadTimeout)):
            stream = await resolve(c.completions.create(prompt="x", max_tokens=5, stream=True))
            if isinstance(stream, openai.AsyncStream):
                async for _ in stream:
                    pass
            else:
                for _ in stream:
                    pass
        elapsed = time.monotonic() - began
        await close(c)
    assert elapsed < 2.0


# -- connection errors -------------------------------------------------------------------------------


def _refusing_port() -> tuple[Any, int]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound but not listening: every connection is refused
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_refused_loopback_connection_fails_at_once_naming_the_url(kind: str, host: str) -> None:
    sock, port = _refusing_port()
    with sock:
        c = make_client(kind, api_key=SECRET, base_url=f"http://{host}:{port}/v1", model="m")  # 4 retries
        started = time.monotonic()
        with pytest.raises(ServerUnreachableError) as caught:
            await resolve(c.completions.create(prompt="hi"))
        elapsed = time.monotonic() - started
        await close(c)
    assert elapsed < 1.0  # openai's 4 retries took about 7 s
    assert isinstance(caught.value, openai.APIConnectionError)  # openai code that catches it still does
    message = str(caught.value)
    assert f"http://{host}:{port}/v1/completions" in message and "refused" in message
    assert "NCOMPASS_BASE_URL" in message and SECRET not in message


async def test_other_connection_errors_keep_openais_retries_and_name_the_url(kind: str) -> None:
    # A server that accepts and hangs up at once: not a refusal, so openai retries, then the URL is named.
    import socket

    accepted = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def hang_up() -> None:
            for _ in range(3):
                conn, _ = server.accept()
                accepted.append(conn)
                conn.close()

        worker = threading.Thread(target=hang_up, daemon=True)
        worker.start()
        url = f"http://127.0.0.1:{port}/v1"
        c = make_client(kind, api_key=SECRET, base_url=url, model="m", max_retries=2)
        with pytest.raises(ServerUnreachableError) as caught:
            await resolve(c.completions.create(prompt="hi"))
        await close(c)
        worker.join(timeout=10)
    assert len(accepted) == 3  # the first try and two retries
    assert f"http://127.0.0.1:{port}/v1/completions" in str(caught.value)
    assert "connection failed" in str(caught.value)
