"""client.sessions and client.session(): time-billed sessions end to end against the local server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from _helpers import Recorder, close, make_client, resolve
from ncompass_openai import AsyncNCompass, NCompass, Session, SessionError, _guard

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def no_active_session(base_url: str, api_key: str) -> Iterator[None]:
    """Each test starts and ends with no active session for the key (one active session per key)."""

    def clear() -> None:
        with NCompass(api_key=api_key, base_url=base_url) as c:
            for session in c.sessions.list(status="active"):
                c.sessions.stop(session.id)

    clear()
    yield
    clear()


@pytest.fixture
async def client(
    kind: str, base_url: str, api_key: str, no_active_session: None
) -> AsyncIterator[NCompass | AsyncNCompass]:
    c = make_client(kind, api_key=api_key, base_url=base_url)
    yield c
    await close(c)


async def test_start_list_retrieve_heartbeat_stop(client: Any) -> None:
    session = await resolve(
        client.sessions.start(idle_timeout=120, max_duration=3600, metadata={"run": "t1"})
    )
    assert isinstance(session, Session)
    assert session.status == "active" and session.id.startswith("sess_")
    assert (session.idle_timeout, session.max_duration, session.metadata) == (120.0, 3600.0, {"run": "t1"})
    assert session.id in _guard.tracked()

    again = await resolve(client.sessions.start())
    assert again.id == session.id  # one active session per key: start is idempotent

    listed = await resolve(client.sessions.list(status="active"))
    assert [s.id for s in listed] == [session.id]
    assert (await resolve(client.sessions.retrieve(session.id))).id == session.id
    beat = await resolve(client.sessions.heartbeat())
    assert beat.id == session.id and beat.status == "active"

    stopped = await resolve(client.sessions.stop())
    assert stopped.id == session.id
    assert stopped.status == "stopped" and stopped.stop_reason == "client"
    assert stopped.stopped_at is not None and stopped.billed_seconds >= 0
    assert session.id not in _guard.tracked()
    # Stopping twice is harmless and changes nothing.
    assert (await resolve(client.sessions.stop(session.id))).stopped_at == stopped.stopped_at
    newest = await resolve(client.sessions.list(limit=1))
    assert [s.id for s in newest] == [session.id]


async def test_default_idle_timeout_is_900_seconds(client: Any) -> None:
    session = await resolve(client.sessions.start())
    assert session.idle_timeout == 900.0
    await resolve(client.sessions.stop(session.id))


async def test_client_idle_timeout_setting(
    kind: str, base_url: str, api_key: str, no_active_session: None
) -> None:
    c = make_client(kind, api_key=api_key, base_url=base_url, idle_timeout=30)
    session = await resolve(c.sessions.start())
    await resolve(c.sessions.stop(session.id))
    await close(c)
    assert session.idle_timeout == 30.0


async def test_session_counts_requests(client: Any) -> None:
    session = await resolve(client.sessions.start())
    await resolve(client.completions.create(prompt="x", max_tokens=2))
    stopped = await resolve(client.sessions.stop(session.id))
    assert stopped.requests >= 1
    assert stopped.usage.completion_tokens >= 1


async def test_stop_without_active_session(client: Any) -> None:
    with pytest.raises(SessionError, match=r"sessions\.start"):
        await resolve(client.sessions.stop())
    with pytest.raises(SessionError):
        await resolve(client.sessions.heartbeat())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"idle_timeout": 0}, ValueError),
        ({"idle_timeout": -5}, ValueError),
        ({"max_duration": float("inf")}, ValueError),
        ({"idle_timeout": "10"}, TypeError),
        ({"metadata": ["not", "a", "mapping"]}, TypeError),
    ],
)
async def test_bad_start_arguments_fail_before_any_request(
    kind: str, base_url: str, api_key: str, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    recorder = Recorder()
    c = make_client(kind, api_key=api_key, base_url=base_url, http_client=recorder.http_client(kind))
    with pytest.raises(error):
        await resolve(c.sessions.start(**kwargs))
    with pytest.raises(ValueError):
        await resolve(c.sessions.list(status="running"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await resolve(c.sessions.list(limit=0))
    with pytest.raises(ValueError):
        await resolve(c.sessions.retrieve(""))
    await close(c)
    assert recorder.requests == []


async def test_another_tenants_session_is_not_found(
    client: Any, kind: str, base_url: str, other_api_key: str
) -> None:
    session = await resolve(client.sessions.start())
    other = make_client(kind, api_key=other_api_key, base_url=base_url, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await resolve(other.sessions.retrieve(session.id))
    await close(other)
    await resolve(client.sessions.stop(session.id))


def test_session_context_manager_stops(base_url: str, api_key: str, no_active_session: None) -> None:
    with NCompass(api_key=api_key, base_url=base_url) as c:
        with c.session(idle_timeout=60) as session:
            assert c.sessions.retrieve(session.id).status == "active"
        assert c.sessions.retrieve(session.id).status == "stopped"
        assert session.id not in _guard.tracked()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, ZeroDivisionError])
def test_session_context_manager_stops_on_interrupt(
    base_url: str, api_key: str, no_active_session: None, exc: type[BaseException]
) -> None:
    with NCompass(api_key=api_key, base_url=base_url) as c:
        with pytest.raises(exc), c.session() as session:
            raise exc()
        stopped = c.sessions.retrieve(session.id)
    assert stopped.status == "stopped" and stopped.stop_reason == "client"


def test_session_context_manager_keeps_the_users_exception(
    base_url: str, api_key: str, no_active_session: None
) -> None:
    # The stop fails (the client is closed under it): the user's own error still comes out, with a warning.
    c = NCompass(api_key=api_key, base_url=base_url, max_retries=0)
    with (
        pytest.raises(ZeroDivisionError),
        pytest.warns(RuntimeWarning, match="Could not stop"),
        c.session() as session,
    ):
        c.close()
        raise ZeroDivisionError
    assert session.id in _guard.tracked()  # still tracked: the exit guard stops it
    _guard.stop_tracked_sessions()
    with NCompass(api_key=api_key, base_url=base_url) as fresh:
        assert fresh.sessions.retrieve(session.id).status == "stopped"


async def test_async_session_context_manager_stops_on_cancel(
    base_url: str, api_key: str, no_active_session: None
) -> None:
    import anyio

    c = AsyncNCompass(api_key=api_key, base_url=base_url)
    seen: list[str] = []
    with anyio.move_on_after(0.5):
        async with c.session() as session:
            seen.append(session.id)
            await anyio.sleep(30)
    assert seen
    stopped = await c.sessions.retrieve(seen[0])
    await c.close()
    assert stopped.status == "stopped"


async def test_async_session_context_manager_stops(
    base_url: str, api_key: str, no_active_session: None
) -> None:
    c = AsyncNCompass(api_key=api_key, base_url=base_url)
    with pytest.raises(KeyboardInterrupt):
        async with c.session(max_duration=600) as session:
            raise KeyboardInterrupt
    stopped = await c.sessions.retrieve(session.id)
    await c.close()
    assert stopped.status == "stopped" and stopped.max_duration == 600.0


async def test_stop_at_exit_false_is_not_tracked(client: Any) -> None:
    session = await resolve(client.sessions.start(stop_at_exit=False))
    assert session.id not in _guard.tracked()
    await resolve(client.sessions.stop(session.id))


async def test_raw_response(client: Any) -> None:
    raw = await resolve(client.sessions.with_raw_response.list(limit=1))
    assert raw.http_request.method == "GET"
    assert raw.status_code == 200


@pytest.mark.parametrize("durable", [False, True])
def test_a_local_server_that_ends_with_its_ledger_leaves_no_session_to_stop_at_exit(
    tmp_path: Any, durable: bool
) -> None:
    from ncompass_openai.server import LocalServer

    db = str(tmp_path / "ledger.db") if durable else ":memory:"
    with LocalServer(engine="synthetic", db=db) as server:
        client = NCompass(api_key=server.api_keys[0], base_url=server.base_url)
        session = client.sessions.start()
        assert session.id in _guard.tracked()
        client.close()
    try:
        # In memory, the ledger (and the session) ended with the server; a file outlives it, and a
        # restarted server still bills that session until it is stopped.
        assert (session.id in _guard.tracked()) is durable
    finally:
        _guard.untrack(session.id, base_url=server.base_url + "/")
