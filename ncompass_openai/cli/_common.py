"""What every command shares: the client it talks through, error lines, time input, waiting (output is
``_output.py``'s).

Nothing here imports openai, the client or Rich at module level: ``ncompass --help`` must stay fast,
so each helper imports what it needs when a command actually runs.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from ._output import format_duration, stderr_console

if TYPE_CHECKING:
    from .._client import NCompass
    from ..types import Deployment, Session

__all__ = [
    "FLAG",
    "ClientOptions",
    "JsonOption",
    "active_session",
    "client_of",
    "command_group",
    "error_line",
    "fail",
    "handle_errors",
    "is_user_error",
    "parse_time",
    "register_secret",
    "wait_for_model",
]

FLAG = ""
"""The ``metavar`` of a flag: it takes no value, so its help shows no type (Typer's own is ``<bool>``)."""

JsonOption = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print the result as JSON on stdout.")]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class ClientOptions:
    """The root options (``ncompass --api-key ... --base-url ...``), handed to every command."""

    api_key: str | None = None
    base_url: str | None = None

    def __repr__(self) -> str:
        # The key must never reach a log or a traceback through this object's repr.
        return f"ClientOptions(api_key={'***' if self.api_key else None}, base_url={self.base_url!r})"


def active_session(client: NCompass) -> Session | None:
    """The key's active session, or ``None`` when none is active."""
    active = client.sessions.list(status="active", limit=1)
    return active[0] if active else None


def command_group(name: str, help: str) -> typer.Typer:
    """A group of commands (``ncompass session ...``); without a command it prints its help."""
    return typer.Typer(name=name, help=help, no_args_is_help=True)


def client_of(ctx: typer.Context) -> NCompass:
    """An ``NCompass`` client of the root options (``--api-key``, ``--base-url``) stored by the app's
    callback; missing values come from ``NCOMPASS_API_KEY`` / ``NCOMPASS_BASE_URL``."""
    import os

    from .._client import NCompass

    obj = ctx.find_root().obj
    options = obj if isinstance(obj, ClientOptions) else ClientOptions()  # a command invoked on its own
    register_secret(options.api_key or os.environ.get("NCOMPASS_API_KEY"))
    return NCompass(api_key=options.api_key, base_url=options.base_url)


# ---------------------------------------------------------------------------------------------------
# Errors: one readable line on stderr, exit code 1, never a traceback and never the key.

_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a value (an API key) that must be scrubbed from every error line."""
    if value and len(value) >= 8:  # a very short "key" would garble every message it matched
        _secrets.add(value)


def _scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


# An unknown id: the command that lists the ones there are.
_LIST_COMMAND = {"session_not_found": "ncompass session list", "booking_not_found": "ncompass book list"}


def error_line(exc: BaseException, *, key_hint: str = "--api-key", key_from_flag: bool = False) -> str:
    """One line that says what went wrong, from an openai / nCompass / validation error.

    Args:
        exc: The error.
        key_hint: How this command takes a key, for the missing-key message.
        key_from_flag: The key was given with ``--api-key`` (so a refused key is not the environment's).
    """
    # Imported here, on the error path only: `ncompass --help` must not pay for openai and pydantic.
    import openai
    from pydantic import ValidationError

    from .._exceptions import (
        BaseURLError,
        LifecycleAPIUnavailableError,
        MissingAPIKeyError,
        ServerUnreachableError,
    )

    message = str(exc)
    if isinstance(exc, MissingAPIKeyError):
        # The client's message speaks to Python code (`api_key=...`); this one to a shell user.
        message = f"No nCompass API key: set the {exc.env_var} environment variable (or use {key_hint})."
    elif isinstance(exc, (BaseURLError, LifecycleAPIUnavailableError, ServerUnreachableError)):
        message = str(exc)  # its own message names the URL and the fix; the server's body says nothing
    elif isinstance(exc, openai.APIStatusError):
        body = exc.body
        detail = body.get("message") if isinstance(body, dict) else None
        message = f"{exc.status_code}: {detail or exc.message}"
        if exc.status_code == 401 and key_from_flag:
            # The server's advice names the environment variable; this key came from the flag.
            first = str(detail or exc.message).split(". ")[0].rstrip(".")
            message = f"401: {first}. The key was given with --api-key: check the key passed there."
        elif exc.status_code == 401 and "NCOMPASS_API_KEY" not in message:
            message += " (check NCOMPASS_API_KEY or --api-key)"
        code = body.get("code") if isinstance(body, dict) else None
        if code in _LIST_COMMAND:
            message += f" (see `{_LIST_COMMAND[code]}`)"
    elif isinstance(exc, openai.APIConnectionError):
        url = getattr(getattr(exc, "request", None), "url", None)
        where = f" {url.scheme}://{url.netloc.decode()}" if url is not None else ""
        message = (
            f"{exc.message.rstrip('.')}: could not reach the nCompass API{where}. Check NCOMPASS_BASE_URL "
            "(or --base-url) and that the server is running."
        )
    elif isinstance(exc, ValidationError):
        # pydantic's multi-line report, folded to "field: problem; field: problem".
        parts = [f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()]
        message = "; ".join(parts)
    line = _scrub(" ".join(message.split())) or type(exc).__name__
    # An error page from a proxy can be kilobytes of HTML: one line means a readable line.
    return line if len(line) <= 400 else line[:399] + "…"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``Error: message`` on stderr and return the exit to raise."""
    sys.stderr.write(f"Error: {_scrub(message)}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def is_user_error(exc: BaseException) -> bool:
    """An error the user can fix: a bad value, or any error of openai's or this package's."""
    if isinstance(exc, ValueError):
        return True
    openai = sys.modules.get("openai")  # not imported yet: no openai error can have been raised
    return openai is not None and isinstance(exc, openai.OpenAIError)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can fix (openai's, ours, ``ValueError``) into one line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write("\nInterrupted.\n")
            raise typer.Exit(130) from None
        except Exception as exc:
            if is_user_error(exc):
                raise fail(error_line(exc, key_from_flag=_key_from_flag([*args, *kwargs.values()]))) from None
            raise

    return wrapper


def _key_from_flag(arguments: list[object]) -> bool:
    """Whether the command's key came from ``ncompass --api-key`` (read from its ``typer.Context``)."""
    # Typer hands its own click Context, which typer.Context does not cover: found by what it does.
    ctx: Any = next((a for a in arguments if hasattr(a, "find_root")), None)
    obj = ctx.find_root().obj if ctx is not None else None
    return isinstance(obj, ClientOptions) and obj.api_key is not None


# ---------------------------------------------------------------------------------------------------
# Output


def parse_time(text: str, *, now: float | None = None) -> float:
    """A time given on the command line (the one rule of ``ncompass_openai._time``: local unless offset).

    Args:
        text: What the user typed: unix seconds, ISO 8601, or ``+30m`` / ``+2h`` / ``+1d`` from now.
        now: The reference for relative times (default: the current time).

    Raises:
        ValueError: the text is none of the accepted forms.
    """
    from .._time import to_unix

    return to_unix(text, "the time", now=now)


# ---------------------------------------------------------------------------------------------------
# Waiting for a model, with a spinner on stderr.


class _WaitText:
    """Spinner text re-rendered on every refresh, so the elapsed time ticks between two polls."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.deployment: Deployment | None = None

    def __rich__(self) -> str:
        elapsed = time.monotonic() - self.started
        deployment = self.deployment
        state = f" ({deployment.state})" if deployment is not None else ""
        text = f"Waiting for the model{state}: {elapsed:.0f} s elapsed"
        if deployment is not None and deployment.estimated_ready_at is not None:
            remaining = deployment.estimated_ready_at - time.time()
            text += (
                f", ready in about {format_duration(remaining)}" if remaining > 0 else ", ready any moment"
            )
        return text


def wait_for_model(client: NCompass, *, timeout: float, quiet: bool = False) -> Deployment:
    """Block until the tenant's model is running, showing a spinner with elapsed time and the estimate.

    Args:
        client: The client to poll through.
        timeout: Seconds to wait before ``DeploymentTimeoutError``.
        quiet: No spinner and no message (``--json`` output).
    """
    if quiet:
        return client.deployment.wait_until_running(timeout=timeout)

    console = stderr_console()
    text = _WaitText()

    def on_progress(deployment: Deployment) -> None:
        text.deployment = deployment

    with console.status(text, spinner="dots"):
        deployment = client.deployment.wait_until_running(timeout=timeout, on_progress=on_progress)
    elapsed = time.monotonic() - text.started
    console.print(f"Model {deployment.model} is running (waited {format_duration(elapsed)}).")
    return deployment
