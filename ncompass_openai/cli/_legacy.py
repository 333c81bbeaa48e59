"""The 0.0.x commands, kept where their users left them: ``nccli-help``, ``nccli-start-session``, ...

Each takes the API key as its only, optional, argument (the 0.0.x form ``nccli-start-session <api_key>``);
without it the key comes from ``NCOMPASS_API_KEY``, which is the better way: a key on the command line
is visible to other users of the machine (``ps``) and lands in the shell's history. The API base URL
comes from ``NCOMPASS_BASE_URL``. On error: one line on stderr and exit code 1. No command prints a key.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._common import active_session, error_line, is_user_error, register_secret
from ._output import format_time

if TYPE_CHECKING:
    from .._client import NCompass

__all__ = [
    "nccli_help",
    "nccli_model_status",
    "nccli_start_model",
    "nccli_start_session",
    "nccli_stop_model",
    "nccli_stop_session",
]

RUNNING = "Model is running!"
NOT_RUNNING = "Need to start model. If you already have, please wait"

_COMMANDS = {
    "nccli-help": "prints this help message",
    "nccli-start-session [API_KEY]": "starts a time-billed session for that API key",
    "nccli-stop-session [API_KEY]": "stops the API key's active session and prints the billed seconds",
    "nccli-start-model [API_KEY]": "starts the API key's model (slow: a cold start; does not wait)",
    "nccli-stop-model [API_KEY]": "stops the API key's model",
    "nccli-model-status [API_KEY]": f"prints '{RUNNING}' or '{NOT_RUNNING}'",
}

_KEY_NOTE = (
    "API_KEY is optional: without it the key is read from NCOMPASS_API_KEY, which is safer, as a key on "
    "the command line is visible to other users of the machine and stays in your shell history. "
    "NCOMPASS_BASE_URL sets the API address. The new `ncompass` command does all this and more "
    "(`ncompass --help`)."
)


def _help_text() -> str:
    width = max(len(usage) for usage in _COMMANDS)
    lines = [f"  {usage:<{width}}  : {what}" for usage, what in _COMMANDS.items()]
    return "nCompass command line (0.0.x commands):\n" + "\n".join(lines) + "\n\n" + _note() + "\n"


def _note() -> str:
    return textwrap.fill(_KEY_NOTE, width=100)


def nccli_help() -> None:
    """``nccli-help``: one line per command with its argument and what it does."""
    sys.stdout.write(_help_text())


def _run(name: str, action: Callable[[NCompass], str], argv: Sequence[str] | None = None) -> None:
    """Parse ``[API_KEY]``, run ``action`` with a client, print its line; errors: one line, exit 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in args):
        sys.stdout.write(f"usage: {name} [API_KEY]\n  {_COMMANDS[f'{name} [API_KEY]']}\n\n{_note()}\n")
        return
    if len(args) > 1:
        sys.stderr.write(f"Error: {name} takes at most one argument, the API key (see `nccli-help`).\n")
        raise SystemExit(1)
    api_key = args[0] if args else None
    register_secret(api_key)
    try:
        from .._client import NCompass

        with NCompass(api_key=api_key) as client:
            line = action(client)
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted.\n")
        raise SystemExit(130) from None
    except Exception as exc:
        if is_user_error(exc):
            sys.stderr.write(f"Error: {error_line(exc, key_hint=f'`{name} API_KEY`')}\n")
            raise SystemExit(1) from None
        raise
    sys.stdout.write(line + "\n")


def _start_session(client: NCompass) -> str:
    # The session outlives this command, billing until nccli-stop-session.
    raw = client.sessions.with_raw_response.start(stop_at_exit=False)
    session = raw.parse()
    if raw.status_code == 200:  # the key's active session, not a new one
        since = format_time(session.started_at)
        return f"Session {session.id} is already active (since {since}): it bills until `nccli-stop-session`."
    return f"Session {session.id} started: billing runs until `nccli-stop-session`."


def _stop_session(client: NCompass) -> str:
    active = active_session(client)
    if active is None:  # what the caller wants is already true (a script that stopped it itself, say)
        return "No active session: nothing is billing."
    session = client.sessions.stop(active.id)
    return f"Session {session.id} stopped: billed {session.billed_seconds:.1f} s."


def _start_model(client: NCompass) -> str:
    deployment = client.deployment.start()
    if deployment.state == "running":
        return f"Model {deployment.model} is already running."
    return (
        f"Model {deployment.model} is {deployment.state}. Check it with `nccli-model-status` until it "
        "says it is running."
    )


def _stop_model(client: NCompass) -> str:
    deployment = client.deployment.stop()
    return f"Model {deployment.model} is {deployment.state}."


def _model_status(client: NCompass) -> str:
    return RUNNING if client.deployment.status().state == "running" else NOT_RUNNING


def nccli_start_session(argv: Sequence[str] | None = None) -> None:
    """``nccli-start-session [API_KEY]``: start a time-billed session."""
    _run("nccli-start-session", _start_session, argv)


def nccli_stop_session(argv: Sequence[str] | None = None) -> None:
    """``nccli-stop-session [API_KEY]``: stop the active session."""
    _run("nccli-stop-session", _stop_session, argv)


def nccli_start_model(argv: Sequence[str] | None = None) -> None:
    """``nccli-start-model [API_KEY]``: start the model (does not wait)."""
    _run("nccli-start-model", _start_model, argv)


def nccli_stop_model(argv: Sequence[str] | None = None) -> None:
    """``nccli-stop-model [API_KEY]``: stop the model."""
    _run("nccli-stop-model", _stop_model, argv)


def nccli_model_status(argv: Sequence[str] | None = None) -> None:
    """``nccli-model-status [API_KEY]``: ``Model is running!`` or ``Need to start model. ...``."""
    _run("nccli-model-status", _model_status, argv)
