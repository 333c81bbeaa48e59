"""``client.sessions``: time-billed sessions (the protocol, "Sessions").

Billing runs from a session's start to its stop. Every session started here is stopped at interpreter
exit or on SIGTERM if the program forgets to (see ``_guard``), and the server stops one whose lease
(``idle_timeout``, default 900 s, ``NCOMPASS_IDLE_TIMEOUT``) runs out. An implicit session the server
opened for this client's inference outside a session (``NCompass-Session-Opened``) is stopped at exit too.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, Literal

from openai import NotGiven, not_given
from typing_extensions import Unpack

from .. import _guard, _headers
from .._compat import httpx
from .._exceptions import SessionError
from ..types import Session, SessionList
from ._common import RequestOptions, check_id, check_positive, client_setting, path_id, request_options
from ._raw import AsyncResource, AsyncSessionsWithRawResponse, SessionsWithRawResponse, SyncResource

__all__ = ["AsyncSessions", "SessionList", "Sessions", "note_billing"]

SessionStatus = Literal["active", "stopped"]
_NO_ACTIVE = (
    "There is no active session for this API key, so there is nothing to {what}. Start one with "
    "`client.sessions.start()` (or `ncompass session start`)."
)


def _start_body(
    client: object,
    idle_timeout: float | NotGiven | None,
    max_duration: float | None,
    metadata: Mapping[str, object] | None,
) -> dict[str, object]:
    if isinstance(idle_timeout, NotGiven):
        idle_timeout = client_setting(client, "idle_timeout")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str to JSON values, got {type(metadata).__name__}.")
    return {
        "idle_timeout": check_positive("idle_timeout", idle_timeout),
        "max_duration": check_positive("max_duration", max_duration),
        "metadata": dict(metadata or {}),
    }


def _list_query(status: SessionStatus | None, limit: int | None) -> dict[str, object]:
    if status is not None and status not in ("active", "stopped"):
        raise ValueError(f"status must be 'active', 'stopped' or None, got {status!r}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}.")
    return {k: v for k, v in (("status", status), ("limit", limit)) if v is not None}


def _record(client: Any, session: object, *, stop_at_exit: bool = True) -> None:
    """Keeps the billing guard in step with what the server said about a session."""
    if not isinstance(session, Session):
        return  # a raw response: the caller handles it
    if session.status == "active" and stop_at_exit:
        _track(client, session.id)
    else:
        _guard.untrack(session.id, base_url=str(client.base_url))


def _track(client: Any, session_id: str) -> None:
    """The billing guard stops ``session_id`` at exit (and on SIGTERM, unless the client opted out)."""
    sigterm = bool(client_setting(client, "stop_on_sigterm"))
    _guard.track(session_id, base_url=str(client.base_url), api_key=client.api_key, sigterm=sigterm)


def note_billing(client: Any, response: httpx.Response) -> None:
    """An inference answer whose request opened an implicit session: the billing guard stops it at exit."""
    if response.headers.get(_headers.SESSION_OPENED) != "true":
        return
    session_id = response.headers.get(_headers.SESSION)
    if session_id:
        _track(client, session_id)


class Sessions(SyncResource["SessionsWithRawResponse"]):
    """Start, stop, inspect and renew time-billed sessions."""

    _raw = SessionsWithRawResponse

    def start(
        self,
        *,
        idle_timeout: float | NotGiven | None = not_given,
        max_duration: float | None = None,
        metadata: Mapping[str, object] | None = None,
        stop_at_exit: bool = True,
        **options: Unpack[RequestOptions],
    ) -> Session:
        """Starts a session, or returns the key's active one (one active session per key).

        Args:
            idle_timeout: Seconds without any request after which the server stops the session (its
                lease). Default: the client's ``idle_timeout`` (900 s, ``NCOMPASS_IDLE_TIMEOUT``);
                ``None`` asks for no idle limit.
            max_duration: Seconds after which the server stops the session whatever happens.
            metadata: Free-form JSON stored with the session.
            stop_at_exit: Stop the session when this process exits or gets SIGTERM, if it is still
                active then. ``False`` for a session meant to outlive the process (a CLI command).
            **options: Per-request ``extra_headers``, ``extra_query``, ``extra_body``, ``timeout``.
        """
        session = self._post(
            "/sessions",
            body=_start_body(self._client, idle_timeout, max_duration, metadata),
            options=request_options(options),
            cast_to=Session,
        )
        _record(self._client, session, stop_at_exit=stop_at_exit)
        return session

    def stop(self, id: str | None = None, **options: Unpack[RequestOptions]) -> Session:
        """Stops a session (``None``: the active one); stopping a stopped session returns it unchanged."""
        session_id = self._active_id("stop") if id is None else check_id("id", id, "sess_")
        session = self._post(
            f"/sessions/{path_id(session_id)}/stop",
            body={},
            options=request_options(options),
            cast_to=Session,
        )
        _record(self._client, session)
        return session

    def retrieve(self, id: str, **options: Unpack[RequestOptions]) -> Session:
        """Returns one session of this key."""
        session = self._get(
            f"/sessions/{path_id(check_id('id', id, 'sess_'))}",
            options=request_options(options),
            cast_to=Session,
        )
        if isinstance(session, Session) and session.status == "stopped":
            _record(self._client, session)
        return session

    def list(
        self,
        *,
        status: SessionStatus | None = None,
        limit: int | None = None,
        **options: Unpack[RequestOptions],
    ) -> builtins.list[Session]:
        """Lists this key's sessions, newest first."""
        page = self._get(
            "/sessions",
            options=request_options(options, query=_list_query(status, limit)),
            cast_to=SessionList,
        )
        return page.data if isinstance(page, SessionList) else page  # a raw response passes through

    def heartbeat(self, id: str | None = None, **options: Unpack[RequestOptions]) -> Session:
        """Renews a session's idle lease (``None``: the active one)."""
        session_id = self._active_id("renew") if id is None else check_id("id", id, "sess_")
        return self._post(
            f"/sessions/{path_id(session_id)}/heartbeat",
            body={},
            options=request_options(options),
            cast_to=Session,
        )

    def _active_id(self, what: str) -> str:
        active = self.list(status="active", limit=1)
        if not active:
            raise SessionError(_NO_ACTIVE.format(what=what))
        return active[0].id


class AsyncSessions(AsyncResource["AsyncSessionsWithRawResponse"]):
    """Start, stop, inspect and renew time-billed sessions."""

    _raw = AsyncSessionsWithRawResponse

    async def start(
        self,
        *,
        idle_timeout: float | NotGiven | None = not_given,
        max_duration: float | None = None,
        metadata: Mapping[str, object] | None = None,
        stop_at_exit: bool = True,
        **options: Unpack[RequestOptions],
    ) -> Session:
        """Starts a session, or returns the key's active one (one active session per key).

        Args:
            idle_timeout: Seconds without any request after which the server stops the session (its
                lease). Default: the client's ``idle_timeout`` (900 s, ``NCOMPASS_IDLE_TIMEOUT``);
                ``None`` asks for no idle limit.
            max_duration: Seconds after which the server stops the session whatever happens.
            metadata: Free-form JSON stored with the session.
            stop_at_exit: Stop the session when this process exits or gets SIGTERM, if it is still
                active then. ``False`` for a session meant to outlive the process (a CLI command).
            **options: Per-request ``extra_headers``, ``extra_query``, ``extra_body``, ``timeout``.
        """
        session = await self._post(
            "/sessions",
            body=_start_body(self._client, idle_timeout, max_duration, metadata),
            options=request_options(options),
            cast_to=Session,
        )
        _record(self._client, session, stop_at_exit=stop_at_exit)
        return session

    async def stop(self, id: str | None = None, **options: Unpack[RequestOptions]) -> Session:
        """Stops a session (``None``: the active one); stopping a stopped session returns it unchanged."""
        session_id = await self._active_id("stop") if id is None else check_id("id", id, "sess_")
        session = await self._post(
            f"/sessions/{path_id(session_id)}/stop",
            body={},
            options=request_options(options),
            cast_to=Session,
        )
        _record(self._client, session)
        return session

    async def retrieve(self, id: str, **options: Unpack[RequestOptions]) -> Session:
        """Returns one session of this key."""
        session = await self._get(
            f"/sessions/{path_id(check_id('id', id, 'sess_'))}",
            options=request_options(options),
            cast_to=Session,
        )
        if isinstance(session, Session) and session.status == "stopped":
            _record(self._client, session)
        return session

    async def list(
        self,
        *,
        status: SessionStatus | None = None,
        limit: int | None = None,
        **options: Unpack[RequestOptions],
    ) -> builtins.list[Session]:
        """Lists this key's sessions, newest first."""
        page = await self._get(
            "/sessions",
            options=request_options(options, query=_list_query(status, limit)),
            cast_to=SessionList,
        )
        return page.data if isinstance(page, SessionList) else page  # a raw response passes through

    async def heartbeat(self, id: str | None = None, **options: Unpack[RequestOptions]) -> Session:
        """Renews a session's idle lease (``None``: the active one)."""
        session_id = await self._active_id("renew") if id is None else check_id("id", id, "sess_")
        return await self._post(
            f"/sessions/{path_id(session_id)}/heartbeat",
            body={},
            options=request_options(options),
            cast_to=Session,
        )

    async def _active_id(self, what: str) -> str:
        active = await self.list(status="active", limit=1)
        if not active:
            raise SessionError(_NO_ACTIVE.format(what=what))
        return active[0].id
