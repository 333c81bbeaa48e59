"""``NCompass`` / ``AsyncNCompass``: openai's clients pointed at nCompass, with its lifecycle resources.

Shaped like openai's ``AzureOpenAI``: a keyword-only constructor that reads its own environment
(``NCOMPASS_*`` only), validates, then calls openai's; ``copy()`` / ``with_options()`` overridden so a
copy keeps the subclass and every setting.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from functools import cached_property
from typing import Any
from weakref import WeakKeyDictionary

import anyio
import openai
from anyio.lowlevel import RunVar
from openai import NotGiven, not_given
from openai._models import FinalRequestOptions
from typing_extensions import Self, override

from ._compat import httpx
from ._config import ClientConfig, isolate_from_openai_env, key_from_env_var, resolve_config
from ._exceptions import NCompassError
from ._legacy import AsyncLegacyMixin, SyncLegacyMixin
from ._plain_server import lifecycle_path, probe_url, route_missing, unavailable_error
from ._status import ModelNotRunningAPIError, error_code, status_error
from .resources import (
    AsyncChat,
    AsyncCompletions,
    AsyncDeploymentResource,
    AsyncSessions,
    Chat,
    Completions,
    DeploymentResource,
    Sessions,
)
from .types import Session

__all__ = ["AsyncNCompass", "ModelNotRunningAPIError", "NCompass"]

IDEMPOTENCY_HEADER = "Idempotency-Key"
_FETCH_LOCKS: RunVar[WeakKeyDictionary[AsyncNCompass, anyio.Lock]] = RunVar("ncompass_model_fetch_locks")
_UNSUPPORTED = ("provider", "data_residency", "workload_identity")
# The 0.0.x API never asked for a client to be closed, so the package closes at exit the sync clients
# still open then: otherwise the interpreter's last garbage collection finalizes their pooled sockets in
# arbitrary order, which Python 3.13 reports as unclosed sockets. Registered at import, so it runs after
# the billing guard's exit handler (atexit runs last-registered first).
_OPEN_AT_EXIT: weakref.WeakSet[NCompass] = weakref.WeakSet()


def _close_open_clients() -> None:
    for client in list(_OPEN_AT_EXIT):
        with contextlib.suppress(Exception):
            client.close()


atexit.register(_close_open_clients)


def _first_model(ids: list[str]) -> str:
    if not ids:
        raise NCompassError(
            "The server lists no model for this API key (GET /v1/models is empty). Pass model=... to the "
            "request or the client, or set NCOMPASS_MODEL."
        )
    return ids[0]


def _check_supported(openai_kwargs: Mapping[str, Any]) -> None:
    for name in _UNSUPPORTED:
        if openai_kwargs.get(name) is not None:
            raise ValueError(f"`{name}` is an OpenAI-only option: an nCompass client does not take it.")


def _copy_kwargs(client: NCompass | AsyncNCompass, **given: Any) -> dict[str, Any]:
    """``_extra_kwargs`` of a copy: the nCompass settings a copy must keep unless overridden."""
    api_key, custom_env_var, base_url = (
        given.pop("api_key"),
        given.pop("custom_env_var"),
        given.pop("base_url"),
    )
    if api_key is not None and custom_env_var is not None:
        raise ValueError("Pass either api_key=... or custom_env_var=..., not both.")
    if api_key is not None and not isinstance(api_key, str):
        raise TypeError(f"api_key must be a string, got {type(api_key).__name__}.")
    same_tenant = api_key is None and custom_env_var is None and isinstance(base_url, NotGiven)
    config = client._ncompass_config
    model = given["model"] or (client._model if same_tenant else config.model)
    idle_timeout = given["idle_timeout"]
    return {
        "api_key": key_from_env_var(custom_env_var) if custom_env_var is not None else api_key,
        "base_url": None if isinstance(base_url, NotGiven) else base_url,
        "extra": {
            "model": model,
            "read_timeout": given["read_timeout"],
            "idle_timeout": config.idle_timeout if isinstance(idle_timeout, NotGiven) else idle_timeout,
        },
    }


def _warn_stop_failed(session_id: str, error: BaseException) -> None:
    warnings.warn(
        f"Could not stop session {session_id} ({type(error).__name__}: {error}); it stays tracked and is "
        "stopped at exit, or by the server when its idle_timeout runs out.",
        RuntimeWarning,
        stacklevel=3,
    )


class NCompass(SyncLegacyMixin, openai.OpenAI):
    """The openai client for nCompass: ``openai.OpenAI`` plus sessions, deployment and bookings."""

    _ncompass_config: ClientConfig

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | httpx.URL | None = None,
        model: str | None = None,
        custom_env_var: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        websocket_base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
        read_timeout: float | None = None,
        max_retries: int | None = None,
        idle_timeout: float | NotGiven | None = not_given,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: httpx.Client | None = None,
        _strict_response_validation: bool = False,
        **openai_kwargs: Any,
    ) -> None:
        """Creates a client; arguments beat ``NCOMPASS_*`` variables, ``OPENAI_*`` ones are never read.

        Args:
            api_key: The tenant's key. Default: ``NCOMPASS_API_KEY``.
            base_url: The API's URL. Default: ``NCOMPASS_BASE_URL`` or ``https://api.ncompass.tech/v1``.
            model: Model used when a request names none. Default: ``NCOMPASS_MODEL``, else the key's
                model from ``GET /v1/models`` (fetched once).
            custom_env_var: Read the key from this environment variable instead (the 0.0.x way); not
                together with ``api_key``.
            organization: Sent as ``OpenAI-Organization`` when given (``OPENAI_ORG_ID`` is ignored).
            project: Sent as ``OpenAI-Project`` when given (``OPENAI_PROJECT_ID`` is ignored).
            websocket_base_url: As openai's.
            timeout: Seconds, or an ``httpx.Timeout`` used as is. Default: ``NCOMPASS_TIMEOUT`` (600 s),
                with reads bounded by ``read_timeout``.
            read_timeout: Longest silence between two reads, streams included. Default:
                ``NCOMPASS_READ_TIMEOUT`` (60 s), far below openai's 600 s.
            max_retries: Retries of a failed request, ``503 model_starting`` included. Default:
                ``NCOMPASS_MAX_RETRIES`` (4).
            idle_timeout: Idle lease a new session asks for, seconds. Default: ``NCOMPASS_IDLE_TIMEOUT``
                (900 s); ``None`` asks for none.
            default_headers: Headers sent with every request.
            default_query: Query parameters sent with every request.
            http_client: An ``httpx.Client`` (``httpx2`` on openai 3.x) to send requests with.
            _strict_response_validation: As openai's.
            **openai_kwargs: Other arguments of ``openai.OpenAI`` (OpenAI-only ones are refused).
        """
        _check_supported(openai_kwargs)
        config = resolve_config(
            api_key=api_key,
            base_url=base_url,
            model=model,
            custom_env_var=custom_env_var,
            timeout=timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            idle_timeout=idle_timeout,
            http_client=http_client,
        )
        super().__init__(
            api_key=config.api_key,
            base_url=config.base_url,
            organization=organization,
            project=project,
            websocket_base_url=websocket_base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
            default_headers=default_headers,
            default_query=default_query,
            http_client=http_client,
            _strict_response_validation=_strict_response_validation,
            **openai_kwargs,
        )
        isolate_from_openai_env(
            self,
            organization=organization,
            project=project,
            default_headers=default_headers,
            openai_kwargs=openai_kwargs,
        )
        # openai creates one key per request and reuses it on every retry, but sends it only when told to.
        self._idempotency_header = IDEMPOTENCY_HEADER
        self._ncompass_config = config
        self._model: str | None = config.model
        self._model_lock = threading.Lock()
        _OPEN_AT_EXIT.add(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r}, model={self._model!r})"

    @cached_property
    def completions(self) -> Completions:
        """Text completions; ``model`` optional."""
        return Completions(self)

    @cached_property
    def chat(self) -> Chat:
        """Chat completions; ``model`` optional."""
        return Chat(self)

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
                self._model = _first_model([m.id for m in self.models.list().data])
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
                _warn_stop_failed(session.id, error)  # the user's own exception goes on, unhidden

    @override
    def request(  # one signature for the overloads of openai's request
        self, cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        try:
            return super().request(cast_to, options, stream=stream, stream_cls=stream_cls)
        except openai.NotFoundError as exc:
            path = lifecycle_path(self.base_url, exc.response.request.url)
            if path is None or not route_missing(exc):
                raise
            probe = probe_url(self.base_url, path)
            status: int | None = None
            if probe is not None:
                with contextlib.suppress(Exception):
                    status = self._client.get(probe, headers=self.auth_headers, timeout=5.0).status_code
            raise unavailable_error(self.base_url, path, exc, probe_status=status) from None

    @override
    def _should_retry(self, response: httpx.Response) -> bool:
        if error_code(response) == "model_stopped":
            return False  # a stopped model stays stopped: fail at once, whatever the headers say
        return super()._should_retry(response)

    @override
    def _make_status_error(
        self, err_msg: str, *, body: object, response: httpx.Response
    ) -> openai.APIStatusError:
        return status_error(response, body) or super()._make_status_error(
            err_msg, body=body, response=response
        )

    @override
    def copy(
        self,
        *,
        api_key: str | Callable[[], str] | None = None,
        admin_api_key: str | None = None,
        workload_identity: Any = None,
        provider: Any = not_given,
        organization: str | None = None,
        project: str | None = None,
        webhook_secret: str | None = None,
        websocket_base_url: str | httpx.URL | None = None,
        base_url: str | httpx.URL | NotGiven | None = not_given,
        data_residency: Any = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
        http_client: httpx.Client | None = None,
        max_retries: int | NotGiven = not_given,
        default_headers: Mapping[str, str] | None = None,
        set_default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        set_default_query: Mapping[str, object] | None = None,
        _enforce_credentials: bool | None = None,
        _extra_kwargs: Mapping[str, Any] = {},
        model: str | None = None,
        custom_env_var: str | None = None,
        read_timeout: float | None = None,
        idle_timeout: float | NotGiven | None = not_given,
    ) -> Self:
        """A new client with this one's settings, some overridden; it shares the HTTP connection pool."""
        _check_supported(
            {
                "provider": None if isinstance(provider, NotGiven) else provider,
                "data_residency": data_residency,
                "workload_identity": workload_identity,
            }
        )
        resolved = _copy_kwargs(
            self,
            api_key=api_key,
            custom_env_var=custom_env_var,
            base_url=base_url,
            model=model,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
        )
        return super().copy(
            api_key=resolved["api_key"],
            admin_api_key=admin_api_key,
            organization=organization,
            project=project,
            webhook_secret=webhook_secret,
            websocket_base_url=websocket_base_url,
            base_url=resolved["base_url"],
            timeout=timeout,
            http_client=http_client,
            max_retries=max_retries,
            default_headers=default_headers,
            set_default_headers=set_default_headers,
            default_query=default_query,
            set_default_query=set_default_query,
            _extra_kwargs={**resolved["extra"], **_extra_kwargs},
        )

    with_options = copy


class AsyncNCompass(AsyncLegacyMixin, openai.AsyncOpenAI):
    """The async openai client for nCompass: ``openai.AsyncOpenAI`` plus sessions, deployment, bookings."""

    _ncompass_config: ClientConfig

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | httpx.URL | None = None,
        model: str | None = None,
        custom_env_var: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        websocket_base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
        read_timeout: float | None = None,
        max_retries: int | None = None,
        idle_timeout: float | NotGiven | None = not_given,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: httpx.AsyncClient | None = None,
        _strict_response_validation: bool = False,
        **openai_kwargs: Any,
    ) -> None:
        """Creates a client; arguments beat ``NCOMPASS_*`` variables, ``OPENAI_*`` ones are never read.

        Args:
            api_key: The tenant's key. Default: ``NCOMPASS_API_KEY``.
            base_url: The API's URL. Default: ``NCOMPASS_BASE_URL`` or ``https://api.ncompass.tech/v1``.
            model: Model used when a request names none. Default: ``NCOMPASS_MODEL``, else the key's
                model from ``GET /v1/models`` (fetched once).
            custom_env_var: Read the key from this environment variable instead (the 0.0.x way); not
                together with ``api_key``.
            organization: Sent as ``OpenAI-Organization`` when given (``OPENAI_ORG_ID`` is ignored).
            project: Sent as ``OpenAI-Project`` when given (``OPENAI_PROJECT_ID`` is ignored).
            websocket_base_url: As openai's.
            timeout: Seconds, or an ``httpx.Timeout`` used as is. Default: ``NCOMPASS_TIMEOUT`` (600 s),
                with reads bounded by ``read_timeout``.
            read_timeout: Longest silence between two reads, streams included. Default:
                ``NCOMPASS_READ_TIMEOUT`` (60 s), far below openai's 600 s.
            max_retries: Retries of a failed request, ``503 model_starting`` included. Default:
                ``NCOMPASS_MAX_RETRIES`` (4).
            idle_timeout: Idle lease a new session asks for, seconds. Default: ``NCOMPASS_IDLE_TIMEOUT``
                (900 s); ``None`` asks for none.
            default_headers: Headers sent with every request.
            default_query: Query parameters sent with every request.
            http_client: An ``httpx.AsyncClient`` (``httpx2`` on openai 3.x) to send requests with.
            _strict_response_validation: As openai's.
            **openai_kwargs: Other arguments of ``openai.AsyncOpenAI`` (OpenAI-only ones are refused).
        """
        _check_supported(openai_kwargs)
        config = resolve_config(
            api_key=api_key,
            base_url=base_url,
            model=model,
            custom_env_var=custom_env_var,
            timeout=timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            idle_timeout=idle_timeout,
            http_client=http_client,
        )
        super().__init__(
            api_key=config.api_key,
            base_url=config.base_url,
            organization=organization,
            project=project,
            websocket_base_url=websocket_base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
            default_headers=default_headers,
            default_query=default_query,
            http_client=http_client,
            _strict_response_validation=_strict_response_validation,
            **openai_kwargs,
        )
        isolate_from_openai_env(
            self,
            organization=organization,
            project=project,
            default_headers=default_headers,
            openai_kwargs=openai_kwargs,
        )
        # openai creates one key per request and reuses it on every retry, but sends it only when told to.
        self._idempotency_header = IDEMPOTENCY_HEADER
        self._ncompass_config = config
        self._model: str | None = config.model
        self._model_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r}, model={self._model!r})"

    @cached_property
    def completions(self) -> AsyncCompletions:
        """Text completions; ``model`` optional."""
        return AsyncCompletions(self)

    @cached_property
    def chat(self) -> AsyncChat:
        """Chat completions; ``model`` optional."""
        return AsyncChat(self)

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
                model = _first_model([m.id for m in page.data])
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
                _warn_stop_failed(session.id, error)

    @override
    async def request(  # one signature for the overloads of openai's request
        self, cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        try:
            return await super().request(cast_to, options, stream=stream, stream_cls=stream_cls)
        except openai.NotFoundError as exc:
            path = lifecycle_path(self.base_url, exc.response.request.url)
            if path is None or not route_missing(exc):
                raise
            probe = probe_url(self.base_url, path)
            status: int | None = None
            if probe is not None:
                with contextlib.suppress(Exception):
                    answer = await self._client.get(probe, headers=self.auth_headers, timeout=5.0)
                    status = answer.status_code
            raise unavailable_error(self.base_url, path, exc, probe_status=status) from None

    @override
    def _should_retry(self, response: httpx.Response) -> bool:
        if error_code(response) == "model_stopped":
            return False
        return super()._should_retry(response)

    @override
    def _make_status_error(
        self, err_msg: str, *, body: object, response: httpx.Response
    ) -> openai.APIStatusError:
        return status_error(response, body) or super()._make_status_error(
            err_msg, body=body, response=response
        )

    @override
    def copy(
        self,
        *,
        api_key: str | Callable[[], Awaitable[str]] | None = None,
        admin_api_key: str | None = None,
        workload_identity: Any = None,
        provider: Any = not_given,
        organization: str | None = None,
        project: str | None = None,
        webhook_secret: str | None = None,
        websocket_base_url: str | httpx.URL | None = None,
        base_url: str | httpx.URL | NotGiven | None = not_given,
        data_residency: Any = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
        http_client: httpx.AsyncClient | None = None,
        max_retries: int | NotGiven = not_given,
        default_headers: Mapping[str, str] | None = None,
        set_default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        set_default_query: Mapping[str, object] | None = None,
        _enforce_credentials: bool | None = None,
        _extra_kwargs: Mapping[str, Any] = {},
        model: str | None = None,
        custom_env_var: str | None = None,
        read_timeout: float | None = None,
        idle_timeout: float | NotGiven | None = not_given,
    ) -> Self:
        """A new client with this one's settings, some overridden; it shares the HTTP connection pool."""
        _check_supported(
            {
                "provider": None if isinstance(provider, NotGiven) else provider,
                "data_residency": data_residency,
                "workload_identity": workload_identity,
            }
        )
        resolved = _copy_kwargs(
            self,
            api_key=api_key,
            custom_env_var=custom_env_var,
            base_url=base_url,
            model=model,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
        )
        return super().copy(
            api_key=resolved["api_key"],
            admin_api_key=admin_api_key,
            organization=organization,
            project=project,
            webhook_secret=webhook_secret,
            websocket_base_url=websocket_base_url,
            base_url=resolved["base_url"],
            timeout=timeout,
            http_client=http_client,
            max_retries=max_retries,
            default_headers=default_headers,
            set_default_headers=set_default_headers,
            default_query=default_query,
            set_default_query=set_default_query,
            _extra_kwargs={**resolved["extra"], **_extra_kwargs},
        )

    with_options = copy
