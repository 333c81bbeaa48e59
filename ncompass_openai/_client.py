"""``NCompass`` / ``AsyncNCompass``: openai's clients pointed at nCompass, with its lifecycle resources.

What the twins share (the constructor, ``copy()``, the retry and error hooks) is ``NCompassBase``'s in
``_client_base.py``; each twin here holds only its I/O: the resources, the model lookup, the session
context manager, the request hook that tells a server without nCompass's lifecycle API apart, and the
response hook that hands an implicit session opened by its inference to the billing guard.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import anyio
import openai
from anyio.lowlevel import RunVar
from openai import NotGiven, not_given
from openai._models import FinalRequestOptions
from typing_extensions import Unpack, override

from ._client_base import NCompassBase, first_model, warn_stop_failed
from ._compat import httpx
from ._connection import REFUSED, named, refused_on_loopback
from ._exceptions import ServerUnreachableError
from ._legacy_async import AsyncLegacyMixin
from ._legacy_sync import SyncLegacyMixin
from ._plain_server import not_found_error, probe_for
from ._status import ModelNotRunningAPIError
from .resources import (
    AsyncChat,
    AsyncCompletions,
    AsyncDeploymentResource,
    AsyncResponses,
    AsyncSessions,
    Chat,
    Completions,
    DeploymentResource,
    Responses,
    Sessions,
)
from .resources.sessions import note_billing
from .types import Session

if TYPE_CHECKING:
    from .batch import BatchOptions, BatchSource, BatchSummary

__all__ = ["AsyncNCompass", "ModelNotRunningAPIError", "NCompass"]

_FETCH_LOCKS: RunVar[WeakKeyDictionary[AsyncNCompass, anyio.Lock]] = RunVar("ncompass_model_fetch_locks")


class NCompass(SyncLegacyMixin, NCompassBase, openai.OpenAI):
    """The openai client for nCompass: ``openai.OpenAI`` plus sessions, deployment and bookings.

    Takes the arguments documented on [`NCompassBase`][ncompass_openai._client_base.NCompassBase].
    """

    @cached_property
    def completions(self) -> Completions:
        """Text completions; ``model`` optional."""
        return Completions(self)

    @cached_property
    def chat(self) -> Chat:
        """Chat completions; ``model`` optional."""
        return Chat(self)

    @cached_property
    def responses(self) -> Responses:
        """The Responses API; ``model`` optional."""
        return Responses(self)

    @cached_property
    def sessions(self) -> Sessions:
        """Time-billed sessions."""
        return Sessions(self)

    @cached_property
    def deployment(self) -> DeploymentResource:
        """The key's model deployment, and its keep-warm ``bookings``."""
        return DeploymentResource(self)

    def resolve_model(self) -> str:
        """The model a request without ``model`` uses: the configured one, or the key's (fetched once)."""
        if self._model is not None:
            return self._model
        with self._model_lock:
            if self._model is None:
                self._model = first_model([m.id for m in self.models.list().data])
            return self._model

    @contextlib.contextmanager
    def session(
        self,
        *,
        idle_timeout: float | NotGiven | None = not_given,
        max_duration: float | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Iterator[Session]:
        """Starts a session and stops it when the block ends, however it ends (Ctrl-C included).

        Args:
            idle_timeout: Idle lease, seconds (default: the client's, 900 s).
            max_duration: Seconds after which the server stops the session.
            metadata: Free-form JSON stored with the session.
        """
        session = self.sessions.start(idle_timeout=idle_timeout, max_duration=max_duration, metadata=metadata)
        try:
            yield session
        finally:
            in_flight = sys.exc_info()[1]
            try:
                self.sessions.stop(session.id)
            except Exception as error:
                if in_flight is None:
                    raise
                warn_stop_failed(session.id, error)  # the user's own exception goes on, unhidden

    def run_batch(self, source: BatchSource, **options: Unpack[BatchOptions]) -> BatchSummary:
        """Runs a batch job in one session and returns its summary; the arguments are those of
        [`AsyncNCompass.run_batch`][ncompass_openai.AsyncNCompass.run_batch] (this runs it on a private
        event loop, so not inside one)."""
        from .batch import run_batch_sync

        return run_batch_sync(self, source, **options)

    @override
    def _send_request(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            response: httpx.Response = super()._send_request(request, **kwargs)
        except httpx.ConnectError as exc:
            if refused_on_loopback(request, exc):
                # An OpenAIError: openai raises it as it is, without its retries.
                raise ServerUnreachableError(request=request, reason=REFUSED) from exc
            raise
        return response

    @override
    def _process_response(self, *, response: httpx.Response, **kwargs: Any) -> Any:
        note_billing(self, response)
        return super()._process_response(response=response, **kwargs)

    @override
    def request(  # one signature for the overloads of openai's request
        self, cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        try:
            return super().request(cast_to, options, stream=stream, stream_cls=stream_cls)
        except openai.APIConnectionError as exc:
            error = named(exc)
            if error is exc:
                raise
            raise error from exc.__cause__
        except openai.NotFoundError as exc:
            found = probe_for(self.base_url, exc)
            if found is None:
                raise
            path, probe = found
            status: int | None = None
            if probe is not None:
                with contextlib.suppress(Exception):
                    status = self._client.get(probe, headers=self.auth_headers, timeout=5.0).status_code
            instead = not_found_error(self.base_url, path, exc, probe_status=status)
            if instead is None:
                raise
            raise instead from None


class AsyncNCompass(AsyncLegacyMixin, NCompassBase, openai.AsyncOpenAI):
    """The async openai client for nCompass: ``openai.AsyncOpenAI`` plus sessions, deployment, bookings.

    Takes the arguments documented on [`NCompassBase`][ncompass_openai._client_base.NCompassBase].
    """

    @cached_property
    def completions(self) -> AsyncCompletions:
        """Text completions; ``model`` optional."""
        return AsyncCompletions(self)

    @cached_property
    def chat(self) -> AsyncChat:
        """Chat completions; ``model`` optional."""
        return AsyncChat(self)

    @cached_property
    def responses(self) -> AsyncResponses:
        """The Responses API; ``model`` optional."""
        return AsyncResponses(self)

    @cached_property
    def sessions(self) -> AsyncSessions:
        """Time-billed sessions."""
        return AsyncSessions(self)

    @cached_property
    def deployment(self) -> AsyncDeploymentResource:
        """The key's model deployment, and its keep-warm ``bookings``."""
        return AsyncDeploymentResource(self)

    async def resolve_model(self) -> str:
        """The model a request without ``model`` uses: the configured one, or the key's (fetched once)."""
        if self._model is not None:
            return self._model
        async with self._fetch_lock():
            if self._model is None:
                page = await self.models.list()
                model = first_model([m.id for m in page.data])
                with self._model_lock:
                    self._model = self._model or model
            return self._model

    def _fetch_lock(self) -> anyio.Lock:
        # One lock per client and event loop: concurrent first requests fetch the model once, and a client
        # used from several loops (threads, test cases) never waits on a lock bound to another loop.
        try:
            locks = _FETCH_LOCKS.get()
        except LookupError:
            locks = WeakKeyDictionary()
            _FETCH_LOCKS.set(locks)
        lock = locks.get(self)
        if lock is None:
            lock = locks[self] = anyio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def session(
        self,
        *,
        idle_timeout: float | NotGiven | None = not_given,
        max_duration: float | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> AsyncIterator[Session]:
        """Starts a session and stops it when the block ends, however it ends (cancellation included).

        Args:
            idle_timeout: Idle lease, seconds (default: the client's, 900 s).
            max_duration: Seconds after which the server stops the session.
            metadata: Free-form JSON stored with the session.
        """
        session = await self.sessions.start(
            idle_timeout=idle_timeout, max_duration=max_duration, metadata=metadata
        )
        try:
            yield session
        finally:
            in_flight = sys.exc_info()[1]
            try:
                with anyio.CancelScope(shield=True):  # a cancelled task must still stop its billing
                    await self.sessions.stop(session.id)
            except Exception as error:
                if in_flight is None:
                    raise
                warn_stop_failed(session.id, error)

    async def run_batch(self, source: BatchSource, **options: Unpack[BatchOptions]) -> BatchSummary:
        """Runs a batch job in one time-billed session, the deployment kept saturated; see "Batch jobs".

        Every input line is checked before anything is sent. The model is brought up first (a cold
        start is not billed), then a session starts, and it stops as soon as the last answer is written,
        or on error or cancellation. Running the same job again (same ``output``) skips what is answered
        and runs again what failed, replaying answers the server still holds.

        Args:
            source: A JSONL file in OpenAI's Batch API format (``custom_id``, ``method``, ``url``,
                ``body``), or an iterable of prompts (``str``), message lists, or line-shaped dicts.
            **options: [`BatchOptions`][ncompass_openai.batch.BatchOptions]: ``output`` (required),
                ``errors``, ``concurrency``, ``session``, ``defaults``, ``max_retries``, ``wait_timeout``,
                ``reporter``.

        Raises:
            BatchInputError: a bad line (or item), by number; nothing was sent.
        """
        from .batch import run_batch

        return await run_batch(self, source, **options)

    @override
    async def _send_request(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            response: httpx.Response = await super()._send_request(request, **kwargs)
        except httpx.ConnectError as exc:
            if refused_on_loopback(request, exc):
                # An OpenAIError: openai raises it as it is, without its retries.
                raise ServerUnreachableError(request=request, reason=REFUSED) from exc
            raise
        return response

    @override
    async def _process_response(self, *, response: httpx.Response, **kwargs: Any) -> Any:
        note_billing(self, response)
        return await super()._process_response(response=response, **kwargs)

    @override
    async def request(  # one signature for the overloads of openai's request
        self, cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        try:
            return await super().request(cast_to, options, stream=stream, stream_cls=stream_cls)
        except openai.APIConnectionError as exc:
            error = named(exc)
            if error is exc:
                raise
            raise error from exc.__cause__
        except openai.NotFoundError as exc:
            found = probe_for(self.base_url, exc)
            if found is None:
                raise
            path, probe = found
            status: int | None = None
            if probe is not None:
                with contextlib.suppress(Exception):
                    answer = await self._client.get(probe, headers=self.auth_headers, timeout=5.0)
                    status = answer.status_code
            instead = not_found_error(self.base_url, path, exc, probe_status=status)
            if instead is None:
                raise
            raise instead from None
