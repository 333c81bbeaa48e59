"""The 0.0.x commands (``nccli-*``) as real processes against a real local server.

Every output is scanned for the API keys used here: no command may print one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncompass_openai.cli import _legacy
from ncompass_openai.server import LocalServer

KEY = "sk-nccli-test-key-0123456789abcdef"
BAD_KEY = "sk-nccli-bad-key-5555555555555555"
BIN = Path(sys.executable).parent
COMMANDS = [
    "nccli-help",
    "nccli-start-session",
    "nccli-stop-session",
    "nccli-start-model",
    "nccli-stop-model",
    "nccli-model-status",
]


@pytest.fixture(scope="module")
def legacy_server() -> Iterator[LocalServer]:
    """A server of this module's own: these tests stop and start its model."""
    with LocalServer(engine="synthetic", api_keys=[KEY]) as server:
        yield server


def nccli(
    command: str, *args: str, server: LocalServer | None = None, env_key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    if server is not None:
        env["NCOMPASS_BASE_URL"] = server.base_url
    if env_key is not None:
        env["NCOMPASS_API_KEY"] = env_key
    proc = subprocess.run(
        [str(BIN / command), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    for secret in (KEY, BAD_KEY):
        assert secret not in proc.stdout + proc.stderr, f"{command} printed an API key"
    return proc


def nccli_in_process(
    command: str,
    *args: str,
    server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env_key: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The entry point function itself, called as its console script would call it (faster)."""
    monkeypatch.setenv("NCOMPASS_BASE_URL", server.base_url)
    if env_key is not None:
        monkeypatch.setenv("NCOMPASS_API_KEY", env_key)
    monkeypatch.setattr(sys, "argv", [command, *args])
    code = 0
    try:
        getattr(_legacy, command.replace("-", "_"))()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    for secret in (KEY, BAD_KEY):
        assert secret not in out.out + out.err, f"{command} printed an API key"
    return subprocess.CompletedProcess([command, *args], code, out.out, out.err)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _wait_for_state(server: LocalServer, line: str) -> None:
    """Poll through the client (cheap), then check the command's own line once it should have changed."""
    from ncompass_openai import NCompass

    want = "running" if line == _legacy.RUNNING else "stopped"
    deadline = time.monotonic() + 30
    with NCompass(api_key=KEY, base_url=server.base_url) as client:
        while client.deployment.status().state != want:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert nccli("nccli-model-status", KEY, server=server).stdout.strip() == line


def test_every_command_is_installed() -> None:
    for command in COMMANDS:
        assert (BIN / command).exists(), command


def test_nccli_help_prints_one_line_per_command_and_the_key_warning() -> None:
    proc = nccli("nccli-help")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    for command in COMMANDS:
        matching = [line for line in lines if line.strip().startswith(command)]
        assert len(matching) == 1, command
        if command != "nccli-help":
            assert "[API_KEY]" in matching[0]
    assert "NCOMPASS_API_KEY" in proc.stdout
    assert "visible to other users" in " ".join(proc.stdout.split())


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_each_command_has_help_with_the_key_warning(command: str) -> None:
    proc = nccli(command, "--help")
    assert proc.returncode == 0
    assert f"usage: {command} [API_KEY]" in proc.stdout
    assert "visible to other users" in " ".join(proc.stdout.split())


def test_model_status_prints_the_0_0_x_lines(legacy_server: LocalServer) -> None:
    assert nccli("nccli-model-status", KEY, server=legacy_server).stdout == "Model is running!\n"

    stopped = nccli("nccli-stop-model", KEY, server=legacy_server)
    assert stopped.returncode == 0
    assert stopped.stdout.startswith("Model ")
    assert "stopp" in stopped.stdout  # stopping or stopped, as the server said
    _wait_for_state(legacy_server, "Need to start model. If you already have, please wait")

    started = nccli("nccli-start-model", KEY, server=legacy_server)
    assert started.returncode == 0
    assert "nccli-model-status" in started.stdout or "already running" in started.stdout
    _wait_for_state(legacy_server, "Model is running!")

    again = nccli("nccli-start-model", KEY, server=legacy_server)
    assert "already running" in again.stdout


def test_key_falls_back_to_the_environment(legacy_server: LocalServer) -> None:
    proc = nccli("nccli-model-status", server=legacy_server, env_key=KEY)
    assert proc.returncode == 0
    assert proc.stdout == "Model is running!\n"


def test_start_and_stop_session(legacy_server: LocalServer) -> None:
    started = nccli("nccli-start-session", KEY, server=legacy_server)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("Session sess_")
    session_id = started.stdout.split()[1]

    # The session outlives the command (it bills until nccli-stop-session).
    from ncompass_openai import NCompass

    with NCompass(api_key=KEY, base_url=legacy_server.base_url) as client:
        assert client.sessions.retrieve(session_id).status == "active"

    again = nccli("nccli-start-session", KEY, server=legacy_server)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"Session {session_id} is already active (since ")

    stopped = nccli("nccli-stop-session", server=legacy_server, env_key=KEY)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith(f"Session {session_id} stopped: billed ")


def test_stop_session_without_an_active_one_says_nothing_bills(legacy_server: LocalServer) -> None:
    # A script whose Python part stopped the session itself (examples/hello_world.py does) ends with
    # nccli-stop-session: what it asks for is already true, so it succeeds.
    nccli("nccli-stop-session", KEY, server=legacy_server)
    again = nccli("nccli-stop-session", KEY, server=legacy_server)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "No active session: nothing is billing."


def test_a_wrong_key_is_one_line_without_the_key(legacy_server: LocalServer) -> None:
    assert "401" in _one_error_line(nccli("nccli-start-session", BAD_KEY, server=legacy_server))


def test_no_key_is_one_line_naming_the_variable(legacy_server: LocalServer) -> None:
    assert "NCOMPASS_API_KEY" in _one_error_line(nccli("nccli-model-status", server=legacy_server))


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_every_command_fails_in_one_line_on_a_wrong_or_missing_key(
    legacy_server: LocalServer,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = nccli_in_process(command, BAD_KEY, server=legacy_server, monkeypatch=monkeypatch, capsys=capsys)
    assert "401" in _one_error_line(wrong)
    wrong_env = nccli_in_process(
        command, server=legacy_server, monkeypatch=monkeypatch, capsys=capsys, env_key=BAD_KEY
    )
    assert "401" in _one_error_line(wrong_env)
    monkeypatch.delenv("NCOMPASS_API_KEY")
    missing = nccli_in_process(command, server=legacy_server, monkeypatch=monkeypatch, capsys=capsys)
    assert "NCOMPASS_API_KEY" in _one_error_line(missing)


def test_more_than_one_argument_is_one_line(legacy_server: LocalServer) -> None:
    line = _one_error_line(nccli("nccli-model-status", KEY, "extra", server=legacy_server))
    assert "at most one argument" in line


def test_in_process_call_with_argv(
    legacy_server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCOMPASS_BASE_URL", legacy_server.base_url)
    _legacy.nccli_model_status([KEY])
    out = capsys.readouterr()
    assert out.out == "Model is running!\n"
    assert KEY not in out.out + out.err


def test_nccli_help_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    _legacy.nccli_help()
    assert capsys.readouterr().out.count("nccli-") >= len(COMMANDS)
