"""The billing guard, in real child processes: a session left running is stopped at exit and on SIGTERM,
and on SIGKILL the server's lease stops it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from ncompass_openai import NCompass, Session

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from ncompass_openai import NCompass

    mode = sys.argv[1]
    if mode == "chain":
        def handler(signum, frame):
            os.write(1, b"user handler ran\\n")
            sys.exit(3)
        signal.signal(signal.SIGTERM, handler)
    client = NCompass(idle_timeout=float(sys.argv[2]))
    if mode.startswith("implicit"):  # no session call: the first completion opens an implicit session
        if mode == "implicit-async":
            import asyncio
            from ncompass_openai import AsyncNCompass

            async def main():
                aclient = AsyncNCompass()
                await aclient.completions.create(prompt="hi", max_tokens=2)
                return (await aclient.sessions.list(status="active"))[0]

            session = asyncio.run(main())
        else:
            client.completions.create(prompt="hi", max_tokens=2)
            session = client.sessions.list(status="active")[0]
        assert session.implicit, session
        print(session.id, flush=True)
        if mode != "implicit-sleep":
            sys.exit(0)
        time.sleep(60)
    session = client.sessions.start()
    print(session.id, flush=True)
    if mode == "raise":
        raise ZeroDivisionError("the user's own bug")
    if mode == "exit":
        sys.exit(0)
    time.sleep(60)
    """
)


@pytest.fixture
def guard_client(base_url: str, other_api_key: str) -> Iterator[NCompass]:
    """A client of the tenant the children use, with no active session before and after."""
    with NCompass(api_key=other_api_key, base_url=base_url) as c:
        for s in c.sessions.list(status="active"):
            c.sessions.stop(s.id)
        yield c
        for s in c.sessions.list(status="active"):
            c.sessions.stop(s.id)


def _spawn(
    mode: str, base_url: str, key: str, idle_timeout: float = 900.0
) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=key, NCOMPASS_BASE_URL=base_url)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(idle_timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready:
        proc.kill()
        pytest.fail("the child did not start its session in 60 s")
    session_id = proc.stdout.readline().strip()
    if not session_id.startswith("sess_"):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"the child failed: {session_id!r} {err}")
    return proc, session_id


def _finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[str, str]:
    """Waits for the child; a child that hangs is killed and its output shown."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the child did not exit in {timeout} s; stdout: {out!r} stderr: {err!r}")


def _stopped(client: NCompass, session_id: str) -> Session:
    session = client.sessions.retrieve(session_id)
    assert session.status == "stopped", session
    return session


def test_sigterm_stops_the_session_at_once(guard_client: NCompass, base_url: str, other_api_key: str) -> None:
    proc, session_id = _spawn("sleep", base_url, other_api_key)
    assert guard_client.sessions.retrieve(session_id).status == "active"
    time.sleep(0.2)
    killed_at = time.time()
    proc.send_signal(signal.SIGTERM)
    _finish(proc)
    # The default SIGTERM action still happens after the sessions are stopped: the same exit status.
    assert proc.returncode == -signal.SIGTERM
    session = _stopped(guard_client, session_id)
    assert session.stop_reason == "client"
    assert session.stopped_at is not None and session.stopped_at - killed_at < 5.0


def test_sigterm_chains_to_the_users_handler(
    guard_client: NCompass, base_url: str, other_api_key: str
) -> None:
    proc, session_id = _spawn("chain", base_url, other_api_key)
    time.sleep(0.2)  # let the child finish printing: its handler must not re-enter that print
    proc.send_signal(signal.SIGTERM)
    out, _ = _finish(proc)
    assert proc.returncode == 3
    assert "user handler ran" in out
    assert _stopped(guard_client, session_id).stop_reason == "client"


def test_exit_on_an_exception_stops_the_session_and_shows_the_error(
    guard_client: NCompass, base_url: str, other_api_key: str
) -> None:
    proc, session_id = _spawn("raise", base_url, other_api_key)
    _, err = _finish(proc)
    assert proc.returncode == 1
    assert "ZeroDivisionError: the user's own bug" in err
    assert "Traceback" in err
    assert _stopped(guard_client, session_id).stop_reason == "client"


def test_normal_exit_stops_the_session(guard_client: NCompass, base_url: str, other_api_key: str) -> None:
    proc, session_id = _spawn("exit", base_url, other_api_key)
    _, err = _finish(proc)
    assert proc.returncode == 0, err
    assert err == ""
    assert _stopped(guard_client, session_id).stop_reason == "client"


@pytest.mark.parametrize("mode", ["implicit", "implicit-async"])
def test_exit_stops_the_implicit_session_its_inference_opened(
    guard_client: NCompass, base_url: str, other_api_key: str, mode: str
) -> None:
    proc, session_id = _spawn(mode, base_url, other_api_key)
    _, err = _finish(proc)
    assert proc.returncode == 0, err
    session = _stopped(guard_client, session_id)
    assert session.implicit and session.stop_reason == "client"


def test_sigterm_stops_the_implicit_session_too(
    guard_client: NCompass, base_url: str, other_api_key: str
) -> None:
    proc, session_id = _spawn("implicit-sleep", base_url, other_api_key)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _finish(proc)
    assert proc.returncode == -signal.SIGTERM
    assert _stopped(guard_client, session_id).stop_reason == "client"


def test_a_plain_openai_client_leaves_the_implicit_session_to_its_lease(
    guard_client: NCompass, base_url: str, other_api_key: str
) -> None:
    code = (
        "import openai, sys; c = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2]); "
        "r = c.completions.with_raw_response.create(model='synthetic', prompt='hi', max_tokens=2); "
        "print(r.headers['NCompass-Session'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, base_url, other_api_key], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    session = guard_client.sessions.retrieve(proc.stdout.strip())
    # Nothing in a plain openai process stops it: the implicit session's short lease does.
    assert session.implicit and session.status == "active"
    assert session.idle_timeout == 300


def test_sigkill_is_covered_by_the_servers_lease(
    guard_client: NCompass, base_url: str, other_api_key: str
) -> None:
    idle_timeout = 1.0
    proc, session_id = _spawn("sleep", base_url, other_api_key, idle_timeout=idle_timeout)
    proc.send_signal(signal.SIGKILL)
    _finish(proc)
    assert proc.returncode == -signal.SIGKILL
    # No request of this key meanwhile: each one would renew the lease. The server sweeps once a second.
    time.sleep(idle_timeout + 3.0)
    session = _stopped(guard_client, session_id)
    assert session.stop_reason == "idle_timeout"
    # Billed only until the lease ran out, not until someone noticed.
    assert session.billed_seconds < idle_timeout + 5.0


HANDLER_CHILD = textwrap.dedent(
    """
    import signal, sys
    from ncompass_openai import NCompass

    def mine(signum, frame):
        pass

    signal.signal(signal.SIGTERM, mine)
    client = NCompass() if sys.argv[1] == "default" else NCompass(stop_on_sigterm=False)
    session = client.sessions.start()
    print("during:", "mine" if signal.getsignal(signal.SIGTERM) is mine else "guard")
    client.sessions.stop(session.id)
    print("after:", "mine" if signal.getsignal(signal.SIGTERM) is mine else "guard")
    """
)


@pytest.mark.parametrize(
    ("how", "env", "during"),
    [
        ("default", {}, "guard"),  # installed while a session is tracked, chaining to `mine`
        ("argument", {}, "mine"),  # NCompass(stop_on_sigterm=False)
        ("default", {"NCOMPASS_STOP_ON_SIGTERM": "0"}, "mine"),  # the whole process opts out
    ],
)
def test_the_sigterm_handler_is_restored_and_can_be_turned_off(
    how: str, env: dict[str, str], during: str, guard_client: NCompass, base_url: str, other_api_key: str
) -> None:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    child_env.update(NCOMPASS_API_KEY=other_api_key, NCOMPASS_BASE_URL=base_url, **env)
    proc = subprocess.run(
        [sys.executable, "-c", HANDLER_CHILD, how], env=child_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"during: {during}", "after: mine"]
