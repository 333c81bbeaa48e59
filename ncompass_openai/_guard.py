"""Billing guard: a session this process started and did not stop is stopped when the process ends.

Billing runs from a session's start to its stop, so a script that forgets ``stop()`` (or dies on an
exception) would bill until the server's idle lease runs out. Every session a client starts is
tracked here until it is stopped; what is still tracked is stopped

- at normal interpreter exit (``atexit``: after the user's traceback has been printed, so it is never
  hidden), and
- on ``SIGTERM`` (handler installed from the main thread only; it stops the sessions and then hands
  the signal to the handler that was there before, or dies of it as the default would). The handler is
  uninstalled, the previous one restored, when the last tracked session ends (from the main thread,
  and only while it is still the process's handler). Sessions of a client made with
  ``stop_on_sigterm=False`` (or with ``NCOMPASS_STOP_ON_SIGTERM=0``) never install it, for applications
  whose server framework owns ``SIGTERM``; they are still stopped at exit.

``SIGKILL`` cannot be caught: there the server's lease (``idle_timeout``) stops the session.

The stop requests use a fresh, short-lived HTTP client, never the user's: the user's client may be
closed already, or (inside a signal handler) be in the middle of a request holding its pool's locks.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import uuid
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import quote

from . import _headers
from ._compat import httpx
from ._version import __version__

__all__ = ["forget_server", "stop_tracked_sessions", "track", "tracked", "untrack"]

_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class _Tracked:
    session_id: str
    base_url: str
    api_key: str = field(repr=False)


# Re-entrant: the SIGTERM handler runs in the main thread, possibly while that thread is inside track().
_lock = threading.RLock()
_sessions: dict[tuple[str, str], _Tracked] = {}
_atexit_installed = False
_sigterm_installed = False
_previous_sigterm: Any = None


def track(session_id: str, *, base_url: str, api_key: str, sigterm: bool = True) -> None:
    """Remembers a started session, to be stopped at exit unless :func:`untrack` is called first.

    Args:
        session_id: The session.
        base_url: The API it was started on.
        api_key: The key that started it (kept in memory only).
        sigterm: Also stop it on ``SIGTERM`` (installs the handler).
    """
    with _lock:
        _sessions[(base_url, session_id)] = _Tracked(session_id, base_url, api_key)
    _install(sigterm=sigterm)


def untrack(session_id: str, *, base_url: str) -> None:
    """Forgets a session (it was stopped, or its owner wants it to outlive the process)."""
    with _lock:
        _sessions.pop((base_url, session_id), None)
        if not _sessions:
            _uninstall_sigterm()


def forget_server(url: str) -> None:
    """Forgets every session of the server at ``url`` (a ledger that ended with its server holds none)."""
    prefix = url.rstrip("/") + "/"
    with _lock:
        for key in [key for key in _sessions if (key[0].rstrip("/") + "/").startswith(prefix)]:
            del _sessions[key]
        if not _sessions:
            _uninstall_sigterm()


def tracked() -> list[str]:
    """Ids of the sessions that would be stopped at exit."""
    with _lock:
        return [entry.session_id for entry in _sessions.values()]


def stop_tracked_sessions() -> None:
    """Stops every tracked session now; failures are reported on stderr, never raised."""
    with _lock:
        entries = list(_sessions.values())
        _sessions.clear()
    if not entries:
        return
    try:
        client = httpx.Client(timeout=httpx.Timeout(_STOP_TIMEOUT, connect=5.0))
    except Exception as exc:  # pragma: no cover - the interpreter is shutting down
        _warn(f"could not stop {len(entries)} session(s): {type(exc).__name__}")
        return
    with client:
        for entry in entries:
            url = entry.base_url.rstrip("/") + f"/sessions/{quote(entry.session_id, safe='')}/stop"
            try:
                response = client.post(
                    url,
                    headers={
                        "Authorization": f"Bearer {entry.api_key}",
                        _headers.IDEMPOTENCY_KEY: f"ncompass-guard-{uuid.uuid4()}",
                        _headers.CLIENT: f"ncompass-openai/{__version__}",
                    },
                )
            except Exception as exc:
                _warn(
                    f"could not stop session {entry.session_id}: {type(exc).__name__}; the server stops it "
                    "when its idle_timeout lease runs out"
                )
                continue
            if response.status_code >= 400 and response.status_code != 404:
                _warn(
                    f"could not stop session {entry.session_id}: HTTP {response.status_code}; the server "
                    "stops it when its idle_timeout lease runs out"
                )


def _warn(message: str) -> None:
    with contextlib.suppress(Exception):  # stderr may be closed at shutdown
        print(f"ncompass-openai: {message}", file=sys.stderr, flush=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    stop_tracked_sessions()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # The default action (or a handler set outside Python): end the process of this very signal, so
    # the exit status is what it would have been without the guard.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install(*, sigterm: bool) -> None:
    global _atexit_installed, _sigterm_installed, _previous_sigterm
    with _lock:
        if not _atexit_installed:
            atexit.register(stop_tracked_sessions)
            _atexit_installed = True
        if not sigterm or _sigterm_installed or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread: the next track() there does it
        try:
            _previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError, AttributeError):  # pragma: no cover - no SIGTERM on this platform
            return
        _sigterm_installed = True


def _uninstall_sigterm() -> None:
    """Give ``SIGTERM`` back to the handler that was there before (caller holds ``_lock``)."""
    global _sigterm_installed
    if not _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; with no session it only chains
    with contextlib.suppress(ValueError, OSError, AttributeError):
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # not replaced by someone else since
            signal.signal(signal.SIGTERM, _previous_sigterm)
    _sigterm_installed = False


def _forget_in_child() -> None:
    # A forked child did not start its parent's sessions: it must not stop them when it exits. (A new
    # lock: another thread of the parent may have held the old one at the fork.)
    global _lock
    _lock = threading.RLock()
    _sessions.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
