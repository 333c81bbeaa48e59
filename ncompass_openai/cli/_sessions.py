"""``ncompass session ...`` and ``ncompass usage``: time-billed sessions and what they cost."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import JsonOption, active_session, client_of, command_group, handle_errors
from ._output import format_duration, format_time, print_json, print_table, stdout_console

if TYPE_CHECKING:
    from .._client import NCompass
    from ..types import Session

__all__ = ["session_app", "usage"]

session_app = command_group(
    "session", "Time-billed sessions: billing runs from a session's start to its stop."
)

SessionId = Annotated[
    str | None,
    typer.Argument(
        metavar="SESSION_ID", help="Session id (sess_...); default: the active session.", show_default=False
    ),
]


def _session_rows(sessions: list[Session]) -> list[list[str]]:
    return [
        [
            s.id + (" *" if s.implicit else ""),
            s.status,
            format_time(s.started_at, short=True),
            format_duration(s.billed_seconds),
            str(s.requests),
            str(s.usage.prompt_tokens),
            str(s.usage.completion_tokens),
        ]
        for s in sessions
    ]


_COLUMNS = ["session", "status", "started", "billed", "req", "in", "out"]
_NUMBERS = ["billed", "req", "in", "out"]
_LEGEND = (
    "req: requests; in / out: prompt / completion tokens; *: implicit (opened by inference outside a "
    "session). Billing is by session time, not by token."
)


def _describe(session: Session) -> str:
    if session.status == "active":
        return f"Session {session.id} is active since {format_time(session.started_at)}."
    reason = f" ({session.stop_reason})" if session.stop_reason else ""
    return (
        f"Session {session.id} stopped{reason} at {format_time(session.stopped_at)}: "
        f"billed {format_duration(session.billed_seconds)}."
    )


@session_app.command("start")
@handle_errors
def start(
    ctx: typer.Context,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            help="Stop the session after this many seconds without a request "
            "(default: NCOMPASS_IDLE_TIMEOUT or 900).",
            min=1,
            show_default=False,
        ),
    ] = None,
    max_duration: Annotated[
        float | None,
        typer.Option(help="Stop the session after this many seconds in any case.", min=1, show_default=False),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Start a session (or show the active one: one session per key). Billing starts now."""
    kwargs: dict[str, Any] = {}
    if idle_timeout is not None:
        kwargs["idle_timeout"] = idle_timeout
    if max_duration is not None:
        kwargs["max_duration"] = max_duration
    with client_of(ctx) as client:
        # The session outlives this command, billing until `ncompass session stop`, as 0.0.x's did.
        raw = client.sessions.with_raw_response.start(stop_at_exit=False, **kwargs)
        session = raw.parse()
    if json_output:
        print_json(session)
    elif raw.status_code == 200:  # 200, not 201: the key's active session, not a new one
        print(
            f"Session {session.id} is already active (since {format_time(session.started_at)}, billed "
            f"{format_duration(session.billed_seconds)} so far): one session per key. Stop it with "
            "`ncompass session stop`."
        )
    else:
        idle = (
            f", or after {format_duration(session.idle_timeout)} without a request"
            if session.idle_timeout is not None
            else ""
        )
        print(
            f"Session {session.id} started at {format_time(session.started_at)}: billing runs until "
            f"`ncompass session stop`{idle}."
        )


def _named_or_active(client: NCompass, session_id: str | None) -> Session | None:
    if session_id is not None:
        return client.sessions.retrieve(session_id)
    return active_session(client)


def _show(session: Session | None, json_output: bool, none: str) -> None:
    if json_output:
        print_json(session)
    else:
        print(none if session is None else _describe(session))


@session_app.command("stop")
@handle_errors
def stop(ctx: typer.Context, session_id: SessionId = None, json_output: JsonOption = False) -> None:
    """Stop a session (default: the active one) and show what it billed."""
    with client_of(ctx) as client:
        session = _named_or_active(client, session_id)
        if session is not None:
            session = client.sessions.stop(session.id)
    # No active session: what the caller wants (nothing billing) is already true, so exit 0.
    _show(session, json_output, "No active session: nothing is billing.")


@session_app.command("status")
@handle_errors
def status(ctx: typer.Context, session_id: SessionId = None, json_output: JsonOption = False) -> None:
    """Show one session (default: the active one)."""
    with client_of(ctx) as client:
        session = _named_or_active(client, session_id)
    _show(session, json_output, "No active session. Start one with `ncompass session start`.")


@session_app.command("list")
@handle_errors
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(help="Only sessions in this state: active or stopped.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many sessions, newest first.", min=1)] = 20,
    json_output: JsonOption = False,
) -> None:
    """List sessions, newest first."""
    if status not in (None, "active", "stopped"):
        raise ValueError(f"--status must be active or stopped, not {status!r}.")
    with client_of(ctx) as client:
        sessions = client.sessions.list(status=status, limit=limit)  # type: ignore[arg-type]
    if json_output:
        print_json({"object": "list", "data": sessions})  # the API's list shape
    elif not sessions:
        print("No sessions.")
    else:
        print_table(None, _COLUMNS, _session_rows(sessions), right=_NUMBERS)
        stdout_console().print(_LEGEND, style="dim")


@handle_errors
def usage(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many sessions, newest first.", min=1)] = 50,
    json_output: JsonOption = False,
) -> None:
    """Billed seconds and tokens per session, with totals."""
    with client_of(ctx) as client:
        sessions = client.sessions.list(limit=limit)
    billed = round(sum(s.billed_seconds for s in sessions), 3)
    prompt = sum(s.usage.prompt_tokens for s in sessions)
    completion = sum(s.usage.completion_tokens for s in sessions)
    requests = sum(s.requests for s in sessions)
    if json_output:
        print_json(
            {
                "sessions": [
                    {
                        "id": s.id,
                        "status": s.status,
                        "implicit": s.implicit,
                        "started_at": s.started_at,
                        "stopped_at": s.stopped_at,
                        "billed_seconds": s.billed_seconds,
                        "requests": s.requests,
                        "prompt_tokens": s.usage.prompt_tokens,
                        "completion_tokens": s.usage.completion_tokens,
                    }
                    for s in sessions
                ],
                "total": {
                    "billed_seconds": billed,
                    "requests": requests,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                },
            }
        )
        return
    if not sessions:
        print("No sessions yet: nothing billed.")
        return
    footer = ["total", "", "", format_duration(billed), str(requests), str(prompt), str(completion)]
    print_table(
        None,
        _COLUMNS,
        _session_rows(sessions),
        right=_NUMBERS,
        footer=footer,
    )
    stdout_console().print(_LEGEND, style="dim")
    if any(s.status == "active" for s in sessions):
        stdout_console().print("Active sessions are still billing: stop them with `ncompass session stop`.")
