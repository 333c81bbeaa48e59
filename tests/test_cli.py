"""The ``ncompass`` command against a real local server: Typer's runner in process, and real subprocesses.

Every output of every command run here goes through :func:`run` / :func:`run_subprocess`, which fail the
test if an API key appears in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ncompass_openai import ModelNotRunningAPIError, NCompass
from ncompass_openai._compat import httpx
from ncompass_openai.cli._app import app
from ncompass_openai.cli._common import error_line, parse_time, register_secret
from ncompass_openai.cli._output import format_duration
from ncompass_openai.server import LocalServer

KEY = "sk-cli-test-key-0123456789abcdef"
OTHER_KEY = "sk-cli-other-key-fedcba9876543210"
BAD_KEY = "sk-cli-wrong-key-5555555555555555"
SECRETS = (KEY, OTHER_KEY, BAD_KEY)
NCOMPASS = str(Path(sys.executable).parent / "ncompass")


@pytest.fixture(scope="module")
def cli_server() -> Iterator[LocalServer]:
    """A server of this module's own: these tests start and stop its model and its sessions."""
    with LocalServer(engine="synthetic", api_keys=[KEY, OTHER_KEY]) as server:
        yield server


def _env(server: LocalServer | None, key: str | None = KEY) -> dict[str, str]:
    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    if server is not None:
        env["NCOMPASS_BASE_URL"] = server.base_url
    if key is not None:
        env["NCOMPASS_API_KEY"] = key
    return env


def _assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        for secret in SECRETS:
            assert secret not in output, "an API key was printed"


class Ran:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def run(
    server: LocalServer | None,
    *args: str,
    key: str | None = KEY,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> Ran:
    """``ncompass ARGS`` through Typer's runner, the server's URL and the key in the environment."""
    result = CliRunner().invoke(app, list(args), env={**_env(server, key), **(env or {})}, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    _assert_no_secret(result.stdout, result.stderr)
    return Ran(result.exit_code, result.stdout, result.stderr)


def run_subprocess(server: LocalServer | None, *args: str, key: str | None = KEY, timeout: float = 60) -> Ran:
    """``ncompass ARGS`` as a real process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(_env(server, key))
    proc = subprocess.run(
        [NCOMPASS, *args], capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL
    )
    _assert_no_secret(proc.stdout, proc.stderr)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def _one_error_line(ran: Ran) -> str:
    assert ran.code == 1, (ran.stdout, ran.stderr)
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in ran.stderr
    return lines[0]


def _ensure_running(server: LocalServer) -> None:
    ran = run(server, "model", "start", "--wait", "--json")
    assert ran.code == 0, ran.stderr
    assert ran.json()["state"] == "running"


# ---------------------------------------------------------------------------------------------------
# Without a server


def test_version_prints_the_package_version() -> None:
    from ncompass_openai import __version__

    ran = run(None, "--version")
    assert ran.code == 0
    assert ran.stdout.strip() == f"ncompass-openai {__version__}"


def test_help_lists_every_command() -> None:
    ran = run(None, "--help")
    assert ran.code == 0
    for command in ("session", "model", "book", "usage", "complete", "chat", "serve", "demo"):
        assert command in ran.stdout
    assert "visible to other users" in " ".join(ran.stdout.replace("│", " ").split())


@pytest.mark.parametrize(
    ("group", "commands"),
    [
        ("session", ("start", "stop", "status", "list")),
        ("model", ("start", "stop", "status", "wait")),
        ("book", ("add", "list", "cancel")),
    ],
)
def test_group_help_lists_its_commands(group: str, commands: tuple[str, ...]) -> None:
    ran = run(None, group, "--help")
    assert ran.code == 0
    for command in commands:
        assert command in ran.stdout


def test_help_imports_neither_openai_nor_the_server() -> None:
    code = "import sys; sys.argv = ['ncompass', '--help']; from ncompass_openai.cli import main; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "typer" in imported  # the check sees imports at all
    heavy = {name for name in imported if name.split(".")[0] in {"openai", "httpx", "httpx2", "fastapi"}}
    assert not heavy
    assert not {name for name in imported if name.startswith("ncompass_openai.server")}


def test_missing_key_is_one_line_naming_the_variable() -> None:
    ran = run(None, "model", "status", key=None)
    assert "NCOMPASS_API_KEY" in _one_error_line(ran)


def test_unreachable_server_is_one_line() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{port}/v1"
        ran = run(None, "--base-url", url, "model", "status", env={"NCOMPASS_MAX_RETRIES": "0"})
    line = _one_error_line(ran)
    assert "NCOMPASS_BASE_URL" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1700000000", 1700000000.0), ("+30m", 1000.0 + 1800), ("+2h", 1000.0 + 7200), ("+1d", 1000.0 + 86400)],
)
def test_parse_time_reads_unix_and_relative_times(text: str, expected: float) -> None:
    assert parse_time(text, now=1000.0) == expected


def test_parse_time_reads_iso_8601_with_an_offset() -> None:
    assert parse_time("2026-01-31T09:00:00+00:00") == 1769850000.0
    assert parse_time("2026-01-31T09:00:00Z") == 1769850000.0


@pytest.mark.parametrize("text", ["tomorrow", "+5x", "+m", ""])
def test_parse_time_rejects_other_text_saying_what_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time(text)


def test_error_line_scrubs_keys_and_stays_one_short_line() -> None:
    register_secret(KEY)
    line = error_line(ValueError(f"bad key {KEY}\n" + "x " * 400))
    assert KEY not in line
    assert "***" in line
    assert "\n" not in line
    assert len(line) <= 400


@pytest.mark.parametrize(("seconds", "text"), [(4.25, "4.2 s"), (185, "3 min 05 s"), (7260, "2 h 01 min")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ---------------------------------------------------------------------------------------------------
# Sessions and usage


def test_session_lifecycle_with_json(cli_server: LocalServer) -> None:
    started = run(cli_server, "session", "start", "--idle-timeout", "120", "--json")
    assert started.code == 0, started.stderr
    session = started.json()
    assert session["id"].startswith("sess_")
    assert session["status"] == "active"
    assert session["idle_timeout"] == 120

    again = run(cli_server, "session", "start", "--json")  # one active session per key: the same one
    assert again.json()["id"] == session["id"]

    status = run(cli_server, "session", "status", "--json")
    assert status.code == 0
    assert status.json()["id"] == session["id"]

    by_id = run(cli_server, "session", "status", session["id"], "--json")
    assert by_id.json()["status"] == "active"

    listed = run(cli_server, "session", "list", "--status", "active", "--json")
    assert listed.json()["object"] == "list"
    assert [s["id"] for s in listed.json()["data"]] == [session["id"]]

    stopped = run(cli_server, "session", "stop", "--json")
    assert stopped.code == 0
    body = stopped.json()
    assert body["id"] == session["id"]
    assert body["status"] == "stopped"
    assert body["stop_reason"] == "client"
    assert body["billed_seconds"] >= 0

    none = run(cli_server, "session", "status", "--json")
    assert none.code == 0
    assert none.json() is None


def test_session_commands_print_readable_lines(cli_server: LocalServer) -> None:
    started = run(cli_server, "session", "start")
    assert started.code == 0
    assert "started" in started.stdout
    assert "ncompass session stop" in started.stdout
    status = run(cli_server, "session", "status")
    assert "is active since" in status.stdout
    table = run(cli_server, "session", "list")
    assert table.code == 0
    assert "billed" in table.stdout
    stopped = run(cli_server, "session", "stop")
    assert "stopped (client)" in stopped.stdout
    assert "billed" in stopped.stdout
    assert "No active session" in run(cli_server, "session", "status").stdout


def test_session_started_by_the_cli_outlives_the_command(cli_server: LocalServer) -> None:
    # The client stops sessions its process started at exit; the CLI's session must keep billing until
    # `ncompass session stop`, as the 0.0.x nccli-start-session did.
    ran = run_subprocess(cli_server, "session", "start", "--json")
    assert ran.code == 0, ran.stderr
    session_id = ran.json()["id"]
    status = run_subprocess(cli_server, "session", "status", session_id, "--json")
    assert status.json()["status"] == "active"
    stopped = run_subprocess(cli_server, "session", "stop", session_id, "--json")
    assert stopped.json()["status"] == "stopped"


def test_session_status_of_an_unknown_id_is_one_line(cli_server: LocalServer) -> None:
    line = _one_error_line(run(cli_server, "session", "status", "sess_doesnotexist"))
    assert "404" in line and "(see `ncompass session list`)" in line


def test_session_list_rejects_an_unknown_status(cli_server: LocalServer) -> None:
    line = _one_error_line(run(cli_server, "session", "list", "--status", "paused"))
    assert "--status" in line


def test_usage_totals_billed_seconds_and_tokens(cli_server: LocalServer) -> None:
    _ensure_running(cli_server)
    run(cli_server, "session", "start")
    completed = run(cli_server, "complete", "Count to three.", "--max-tokens", "5", "--json")
    assert completed.code == 0, completed.stderr
    run(cli_server, "session", "stop")

    usage = run(cli_server, "usage", "--json").json()
    sessions = usage["sessions"]
    assert sessions
    assert usage["total"]["billed_seconds"] == pytest.approx(sum(s["billed_seconds"] for s in sessions))
    assert usage["total"]["completion_tokens"] == sum(s["completion_tokens"] for s in sessions)
    assert sessions[0]["completion_tokens"] >= completed.json()["usage"]["completion_tokens"] > 0
    assert sessions[0]["requests"] >= 1

    table = run(cli_server, "usage")
    assert table.code == 0
    assert "total" in table.stdout
    assert sessions[0]["id"] in table.stdout


def test_complete_outside_a_session_is_billed_to_an_implicit_one_stopped_at_exit() -> None:
    with LocalServer(engine="synthetic", api_keys=[KEY]) as server:
        for _ in range(2):
            ran = run_subprocess(server, "complete", "hi", "--max-tokens", "3")
            assert ran.code == 0, ran.stderr
        usage = run(server, "usage", "--json").json()
        assert [(s["implicit"], s["status"], s["requests"]) for s in usage["sessions"]] == [
            (True, "stopped", 1),
            (True, "stopped", 1),
        ]
        total = usage["total"]["billed_seconds"]
        assert total == round(total, 3) == round(sum(s["billed_seconds"] for s in usage["sessions"]), 3)
        table = run(server, "usage").stdout
        assert f"{usage['sessions'][0]['id']} *" in table
        assert "*: implicit" in " ".join(table.split())


def test_session_stop_without_an_active_session_succeeds() -> None:
    with LocalServer(engine="synthetic", api_keys=[KEY]) as server:
        ran = run(server, "session", "stop")
        assert ran.code == 0 and ran.stdout.strip() == "No active session: nothing is billing."
        assert run(server, "session", "stop", "--json").stdout.strip() == "null"
        assert run(server, "session", "stop", "sess_unknown").code == 1  # a named one must exist


def test_usage_with_no_sessions_says_so() -> None:
    with LocalServer(engine="synthetic", api_keys=[KEY]) as server:
        assert run(server, "usage", "--json").json()["sessions"] == []
        assert "nothing billed" in run(server, "usage").stdout


def test_a_wrong_key_is_one_line_without_the_key(cli_server: LocalServer) -> None:
    for args in (["model", "status"], ["session", "start"], ["--api-key", BAD_KEY, "usage"]):
        line = _one_error_line(run(cli_server, *args, key=BAD_KEY))
        assert "401" in line


# ---------------------------------------------------------------------------------------------------
# Model deployment


def test_model_status_json(cli_server: LocalServer) -> None:
    ran = run(cli_server, "model", "status", "--json")
    assert ran.code == 0
    body = ran.json()
    assert body["object"] == "deployment"
    assert body["state"] in ("stopped", "starting", "running", "stopping", "failed")
    assert isinstance(body["model"], str)


def test_model_stop_then_start_with_wait(cli_server: LocalServer) -> None:
    stopped = run(cli_server, "model", "stop", "--json")
    assert stopped.code == 0
    assert stopped.json()["state"] in ("stopping", "stopped")
    status = run(cli_server, "model", "status")
    assert "Model" in status.stdout

    started = run(cli_server, "model", "start", "--wait")
    assert started.code == 0, started.stderr
    assert "running" in started.stdout
    assert "is running" in started.stderr  # the spinner's final line, on stderr

    waited = run(cli_server, "model", "wait", "--json")
    assert waited.code == 0
    assert waited.json()["state"] == "running"


def test_inference_on_a_stopped_model_is_one_line_that_says_how_to_start_it(cli_server: LocalServer) -> None:
    assert run(cli_server, "model", "stop").code == 0
    try:
        deadline = time.monotonic() + 30
        while run(cli_server, "model", "status", "--json").json()["state"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for args in (["complete", "hello", "--max-tokens", "3"], ["chat", "hello", "--max-tokens", "3"]):
            line = _one_error_line(run(cli_server, *args))
            assert "ncompass model start" in line
    finally:
        _ensure_running(cli_server)


def test_model_wait_shows_the_servers_estimate_during_a_cold_start() -> None:
    with LocalServer(engine="synthetic", api_keys=[KEY], autostart=False, cold_start=1.5) as server:
        started = run(server, "model", "start", "--json")
        assert started.json()["state"] == "starting"
        assert started.json()["estimated_ready_at"] is not None
        begun = time.monotonic()
        waited = run(server, "model", "wait", "--timeout", "60")
        assert waited.code == 0, waited.stderr
        assert time.monotonic() - begun > 0.5
        assert "is running" in waited.stderr


def test_model_wait_times_out_with_one_line() -> None:
    with LocalServer(engine="synthetic", api_keys=[KEY], autostart=False) as server:
        line = _one_error_line(run(server, "model", "wait", "--timeout", "0.5"))
        assert "ncompass model start" in line


# ---------------------------------------------------------------------------------------------------
# Bookings


def test_booking_add_list_cancel(cli_server: LocalServer) -> None:
    added = run(cli_server, "book", "add", "+1h", "+2h", "--note", "demo day", "--json")
    assert added.code == 0, added.stderr
    booking = added.json()
    assert booking["id"].startswith("book_")
    assert booking["status"] == "scheduled"
    assert booking["end_at"] - booking["start_at"] == pytest.approx(3600, abs=2)
    assert booking["note"] == "demo day"

    listed = run(cli_server, "book", "list", "--json").json()
    assert listed["object"] == "list"  # the API's list shape, as docs/cli.md's jq line reads it
    assert booking["id"] in [b["id"] for b in listed["data"]]
    table = run(cli_server, "book", "list")
    assert booking["id"] in table.stdout

    cancelled = run(cli_server, "book", "cancel", booking["id"], "--json")
    assert cancelled.json()["status"] == "cancelled"
    assert "cancelled" in run(cli_server, "book", "cancel", booking["id"]).stdout


def test_booking_add_readable_line(cli_server: LocalServer) -> None:
    ran = run(cli_server, "book", "add", "+10m", "+20m")
    assert ran.code == 0
    assert ran.stdout.startswith("Booked book_")
    run(cli_server, "book", "cancel", ran.stdout.split()[1].rstrip(":"))


@pytest.mark.parametrize(
    ("start", "end", "expect"),
    [("yesterday", "+1h", "ISO 8601"), ("+2h", "+1h", "end_at"), ("1000", "2000", "end_at")],
)
def test_booking_bad_times_are_one_line(cli_server: LocalServer, start: str, end: str, expect: str) -> None:
    assert expect in _one_error_line(run(cli_server, "book", "add", start, end))


def test_booking_cancel_unknown_is_one_line(cli_server: LocalServer) -> None:
    line = _one_error_line(run(cli_server, "book", "cancel", "book_nope"))
    assert "404" in line and "(see `ncompass book list`)" in line


# ---------------------------------------------------------------------------------------------------
# Completions and chat


def test_complete_streams_text(cli_server: LocalServer) -> None:
    _ensure_running(cli_server)
    ran = run(cli_server, "complete", "Once upon a time", "--max-tokens", "8")
    assert ran.code == 0, ran.stderr
    assert ran.stdout.endswith("\n")
    assert ran.stdout.strip()


def test_complete_json_is_the_response_object(cli_server: LocalServer) -> None:
    _ensure_running(cli_server)
    body = run(cli_server, "complete", "Once upon a time", "--max-tokens", "6", "--json").json()
    assert body["object"] == "text_completion"
    assert len(body["choices"]) == 1
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 6


def test_complete_reads_the_prompt_from_stdin(cli_server: LocalServer) -> None:
    _ensure_running(cli_server)
    body = run(
        cli_server, "complete", "-", "--max-tokens", "4", "--json", input="A prompt from a pipe"
    ).json()
    assert body["usage"]["prompt_tokens"] > 0


def test_chat_streams_and_json(cli_server: LocalServer) -> None:
    _ensure_running(cli_server)
    ran = run(cli_server, "chat", "Hello there", "--system", "Be brief.", "--max-tokens", "8")
    assert ran.code == 0, ran.stderr
    assert ran.stdout.strip()
    body = run(cli_server, "chat", "Hello there", "--max-tokens", "5", "--json").json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["complete", "   "], "empty"),
        (["chat", ""], "empty"),
        (["complete", "hi", "--model", "no-such-model"], "404"),
    ],
)
def test_bad_generation_input_is_one_line(cli_server: LocalServer, args: list[str], expect: str) -> None:
    _ensure_running(cli_server)
    assert expect in _one_error_line(run(cli_server, *args))


def test_out_of_range_option_is_a_usage_error(cli_server: LocalServer) -> None:
    ran = run(cli_server, "complete", "hi", "--max-tokens", "0")
    assert ran.code == 2
    assert "max-tokens" in ran.stderr


# ---------------------------------------------------------------------------------------------------
# Real subprocesses


def test_subprocess_model_status_json_and_complete(cli_server: LocalServer) -> None:
    _ensure_running(cli_server)
    status = run_subprocess(cli_server, "model", "status", "--json")
    assert status.code == 0, status.stderr
    assert status.json()["state"] == "running"
    completed = run_subprocess(cli_server, "complete", "Say hi", "--max-tokens", "5")
    assert completed.code == 0, completed.stderr
    assert completed.stdout.strip()


def test_a_refused_key_given_with_the_flag_is_named_as_the_flags(cli_server: LocalServer) -> None:
    line = _one_error_line(run(cli_server, "--api-key", BAD_KEY, "session", "list", key=None))
    assert line.startswith("Error: 401: Invalid API key")
    assert "--api-key" in line and "NCOMPASS_API_KEY" not in line  # the environment had no key at all
    from_env = _one_error_line(run(cli_server, "session", "list", key=BAD_KEY))
    assert "NCOMPASS_API_KEY" in from_env  # from the environment: the server's advice stands


@pytest.mark.parametrize("option", ["--api-key", "--base-url"])
def test_a_root_option_after_the_command_says_where_it_goes(option: str) -> None:
    ran = run_subprocess(None, "model", "status", option, "x-value-0123456789")
    assert ran.code == 2
    assert ran.stderr.startswith(
        f"Error: {option} is an option of `ncompass` itself: put it before the command"
    )
    assert "Traceback" not in ran.stderr


def test_serve_keeps_its_own_api_key_option() -> None:
    ran = run_subprocess(None, "serve", "--api-key", "x-value-0123456789", "--help")
    assert ran.code == 0, ran.stderr
    assert "--api-key" in ran.stdout


@pytest.mark.parametrize(
    "command", [[], ["batch", "run"], ["model", "start"], ["session", "list"], ["serve"]]
)
def test_flags_show_no_type_in_the_help(command: list[str]) -> None:
    shown = run(None, *command, "--help")
    assert shown.code == 0, shown.stderr
    typed = [line for line in shown.stdout.splitlines() if "<bool>" in line]
    assert all("--help" in line for line in typed), typed  # only Typer's own --help keeps its <bool>


def test_top_p_zero_is_refused_as_its_help_says() -> None:
    shown = run(None, "complete", "--help")
    assert "above 0, at most 1" in " ".join(shown.stdout.split())
    ran = run(None, "complete", "Hi", "--top-p", "0")
    assert ran.code == 2  # a usage error, before any request
    assert "0 is not in (0, 1]" in " ".join(ran.stderr.split())


def test_subprocess_errors_are_one_line_and_exit_1(cli_server: LocalServer) -> None:
    assert "401" in _one_error_line(run_subprocess(cli_server, "session", "list", key=BAD_KEY))
    assert "NCOMPASS_API_KEY" in _one_error_line(run_subprocess(cli_server, "usage", key=None))


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ncompass_openai", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("ncompass-openai ")


def test_serve_runs_the_server_in_a_subprocess() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env["NCOMPASS_SERVER_API_KEYS"] = KEY
    proc = subprocess.Popen(
        [NCOMPASS, "serve", "--engine", "synthetic", "--port", "0", "--db", ":memory:"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            for word in line.split():
                if word.startswith("http://127.0.0.1:") and not word.endswith(":0"):
                    url = word.rstrip(".,)/")
        assert url is not None, "".join(lines)
        base_url = url if url.endswith("/v1") else url + "/v1"
        ran = run(None, "--base-url", base_url, "model", "wait", "--json", "--timeout", "30")
        assert ran.code == 0, ran.stderr
        assert ran.json()["state"] == "running"
        _assert_no_secret(*lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_on_a_busy_port_is_one_line() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        # In a subprocess: what is tested is what a user sees (one line, exit code 1).
        ran = run_subprocess(None, "serve", "--engine", "synthetic", "--port", port, "--db", ":memory:")
    assert "cannot listen on 127.0.0.1:" in _one_error_line(ran)


def test_demo_runs_the_hello_world_flow() -> None:
    ran = run(None, "demo", "--engine", "synthetic", "--max-tokens", "8")
    assert ran.code == 0, ran.stderr
    for step in (
        "1. Session",
        "2. Waiting",
        "3. A streamed completion",
        "4. A streamed chat",
        "5. A batch",
        "6.",
    ):
        assert step in ran.stderr
    assert "billed" in ran.stderr
    assert len([line for line in ran.stdout.splitlines() if line.strip()]) >= 4  # completion, chat, 2 answers


@pytest.mark.model
def test_demo_with_the_real_model() -> None:
    ran = run_subprocess(None, "demo", "--max-tokens", "8", timeout=300)
    assert ran.code == 0, ran.stderr
    assert "6. Session" in ran.stderr


def test_interactive_chat_on_a_terminal(cli_server: LocalServer) -> None:
    import pty
    import select

    _ensure_running(cli_server)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(_env(cli_server))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [NCOMPASS, "chat", "--max-tokens", "5"], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, count: int) -> None:
        nonlocal seen
        deadline = time.monotonic() + 60
        while seen.count(marker) < count:
            assert time.monotonic() < deadline, seen
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break

    try:
        read_until(b"you>", 1)
        os.write(master, b"Hello there\n")
        read_until(b"you>", 2)  # the answer was streamed, and the next prompt is shown
        os.write(master, b"\x04")  # Ctrl-D ends the chat
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = seen.decode(errors="replace")
    assert "model>" in text
    _assert_no_secret(text)


# -- `ncompass serve`'s flags are made from ServerSettings ------------------------------------------------


def test_every_server_setting_has_its_flag() -> None:
    from ncompass_openai.server import ServerSettings

    ran = run(None, "serve", "--help")
    assert ran.code == 0, ran.stderr
    text = " ".join(ran.stdout.replace("│", " ").split())
    for name in ServerSettings.model_fields:
        flag = "--api-key" if name == "api_keys" else "--" + name.replace("_", "-")
        assert flag in text, f"no {flag} for ServerSettings.{name}"
    assert "--sweep-interval" in text  # the flag that had drifted away


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--max-body-bytes", "10"), "--max-body-bytes"),  # the setting refuses < 1024: so does the flag
        (("--sweep-interval", "0"), "--sweep-interval"),  # an open bound, refused by the setting itself
        (("--api-key", "has space"), "--api-key"),
    ],
)
def test_serve_refuses_what_the_setting_refuses_naming_the_flag(args: tuple[str, ...], flag: str) -> None:
    ran = run_subprocess(None, "serve", "--engine", "synthetic", "--port", "0", "--db", ":memory:", *args)
    assert ran.code == 2, ran.stderr
    assert flag in ran.stderr and "Traceback" not in ran.stderr


def _serve_and_read_state(*args: str, env: dict[str, str]) -> str:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    child_env.update(NCOMPASS_SERVER_API_KEYS=KEY, **env)
    proc = subprocess.Popen(
        [NCOMPASS, "serve", "--engine", "synthetic", "--port", "0", "--db", ":memory:", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env,
    )
    try:
        assert proc.stdout is not None
        url = None
        while url is None:
            line = proc.stdout.readline()
            assert line, "the server exited"
            url = next((w for w in line.split() if w.startswith("http://127.0.0.1:")), None)
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as http:
            state: str = http.get(url.rstrip(".,)/") + "/deployment").json()["state"]
        return state
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_autostart_flag_beats_the_environment() -> None:
    off = {"NCOMPASS_SERVER_AUTOSTART": "false"}
    assert _serve_and_read_state(env=off) == "stopped"
    assert _serve_and_read_state("--autostart", env=off) in ("starting", "running")
    assert _serve_and_read_state("--no-autostart", env={}) == "stopped"


def test_model_wait_on_a_stopped_model_is_one_line_at_once(cli_server: LocalServer) -> None:
    assert run(cli_server, "model", "stop").code == 0
    try:
        began = time.monotonic()
        ran = run(cli_server, "model", "wait", "--timeout", "60")
        line = _one_error_line(ran)
        assert time.monotonic() - began < 5  # not the 60 s timeout
        assert "not running (state: stopp" in line and "ncompass model start" in line
    finally:
        _ensure_running(cli_server)


def test_short_times_show_the_year_when_it_is_not_this_one() -> None:
    from datetime import datetime

    from ncompass_openai.cli._output import format_time

    now = datetime.now().astimezone()
    this_year = now.replace(month=1, day=2, hour=9, minute=30).timestamp()
    next_year = now.replace(year=now.year + 1, month=1, day=2, hour=9, minute=30).timestamp()
    assert format_time(this_year, short=True) == "01-02 09:30"
    assert format_time(next_year, short=True) == f"{now.year + 1}-01-02 09:30"


def test_starting_an_active_session_says_it_is_already_active(cli_server: LocalServer) -> None:
    first = run(cli_server, "session", "start")
    assert first.code == 0 and "started at" in first.stdout
    try:
        again = run(cli_server, "session", "start")
        assert again.code == 0, again.stderr
        assert "is already active (since" in again.stdout and "ncompass session stop" in again.stdout
    finally:
        assert run(cli_server, "session", "stop").code == 0


def test_serve_with_a_missing_model_file_exits_at_once() -> None:
    began = time.monotonic()
    ran = run_subprocess(
        None, "serve", "--model", "/nonexistent/model.gguf", "--port", "0", "--db", ":memory:"
    )
    line = _one_error_line(ran)
    assert time.monotonic() - began < 20
    assert "--model /nonexistent/model.gguf: no such file" in line


def test_serve_exits_1_when_the_model_fails_to_load_at_boot(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a GGUF file")
    ran = run_subprocess(None, "serve", "--model", str(broken), "--port", "0", "--db", ":memory:")
    assert ran.code == 1, (ran.stdout, ran.stderr)
    errors = [line for line in ran.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in ran.stderr
    assert "failed to load at boot" in errors[0] and str(broken) in errors[0]
    assert ".." not in errors[0]


def test_serve_without_autostart_stays_up_with_a_failed_deployment(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a GGUF file")
    with LocalServer(engine="llama", model=str(broken), api_keys=[KEY], autostart=False) as server:
        started = run(server, "model", "start", "--wait", "--timeout", "30")
        assert started.code == 1
        # stderr holds llama.cpp's own lines too: the in-process server loads in this process.
        [line] = [x for x in started.stderr.splitlines() if x.startswith("Error: ")]
        assert "failed to start" in line and str(broken) in line
        # The one advice that helps: starting again cannot, until the file is fixed.
        assert "fails the same way until that is fixed" in line and ".." not in line
        status = run(server, "model", "status", "--json").json()
        assert status["state"] == "failed" and str(broken) in status["error"]
        client = NCompass(api_key=KEY, base_url=server.base_url, max_retries=0)
        with client, pytest.raises(ModelNotRunningAPIError) as caught:
            client.completions.create(prompt="hi")
        assert caught.value.state == "failed" and caught.value.error and str(broken) in caught.value.error
        assert "fails the same way" in str(caught.value) and ".." not in str(caught.value)
        assert run(server, "session", "list").code == 0  # the server is still up
