"""What ``NCompass`` and ``AsyncNCompass`` share: everything of a client that does no I/O.

Shaped like openai's ``AzureOpenAI`` (its ``BaseAzureClient``) and httpx's ``BaseClient``: one
keyword-only constructor that reads its own environment (``NCOMPASS_*`` only), validates, then calls
openai's; one ``copy()`` / ``with_options()`` that keeps the subclass and every setting; the retry and
error hooks. The twins in ``_client.py`` add only their I/O: resources, model lookup, sessions.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import warnings
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import openai
from openai import NotGiven, not_given
from typing_extensions import Self

from . import _headers
from ._compat import httpx
from ._config import ClientConfig, isolate_from_openai_env, key_from_env_var, resolve_config
from ._exceptions import NCompassError
from ._status import error_code, status_error

__all__ = ["NCompassBase", "first_model", "warn_stop_failed"]

_UNSUPPORTED = ("provider", "data_residency", "workload_identity")
# The 0.0.x API never asked for a client to be closed, so the package closes at exit the sync clients
# still open then: otherwise the interpreter's last garbage collection finalizes their pooled sockets in
# arbitrary order, which Python 3.13 reports as unclosed sockets. Registered at import, so it runs after
# the billing guard's exit handler (atexit runs last-registered first).
_OPEN_AT_EXIT: weakref.WeakSet[openai.OpenAI] = weakref.WeakSet()


def _close_open_clients() -> None:
    for client in list(_OPEN_AT_EXIT):
        with contextlib.suppress(Exception):
            client.close()


atexit.register(_close_open_clients)


_PREPARED_URLS = 64


def first_model(ids: list[str]) -> str:
    """The key's model from the ids ``GET /v1/models`` lists."""
    if not ids:
        raise NCompassError(
            "The server lists no model for this API key (GET /v1/models is empty). Pass model=... to the "
            "request or the client, or set NCOMPASS_MODEL."
        )
    return ids[0]


def warn_stop_failed(session_id: str, error: BaseException) -> None:
    warnings.warn(
        f"Could not stop session {session_id} ({type(error).__name__}: {error}); it stays tracked and is "
        "stopped at exit, or by the server when its idle_timeout runs out.",
        RuntimeWarning,
        stacklevel=3,
    )


def _check_supported(openai_kwargs: Mapping[str, Any]) -> None:
    for name in _UNSUPPORTED:
        value = openai_kwargs.get(name)
        if value is not None and not isinstance(value, NotGiven):
            raise ValueError(f"`{name}` is an OpenAI-only option: an nCompass client does not take it.")


class NCompassBase:
    """The shared half of ``NCompass`` / ``AsyncNCompass``; listed before openai's class in their bases."""

    _ncompass_config: ClientConfig
    _model: str | None
    if TYPE_CHECKING:  # provided by openai's client, which follows this class in the subclasses' bases
        base_url: httpx.URL
        _idempotency_header: str | None

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
        stop_on_sigterm: bool | None = None,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: httpx.Client | httpx.AsyncClient | None = None,
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
            stop_on_sigterm: Whether sessions this client starts install the billing guard's ``SIGTERM``
                handler (they are stopped at exit either way). Default: ``NCOMPASS_STOP_ON_SIGTERM``
                (on); turn it off where a server framework owns ``SIGTERM``.
            default_headers: Headers sent with every request.
            default_query: Query parameters sent with every request.
            http_client: An ``httpx.Client`` for ``NCompass``, an ``httpx.AsyncClient`` for
                ``AsyncNCompass`` (``httpx2`` on openai 3.x) to send requests with.
            _strict_response_validation: As openai's.
            **openai_kwargs: Other arguments of openai's client (OpenAI-only ones are refused).
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
            stop_on_sigterm=stop_on_sigterm,
            http_client=http_client,
        )
        super().__init__(  # type: ignore[call-arg]  # openai's client, next in the subclass's bases
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
            self,  # type: ignore[arg-type]  # an openai client by then
            organization=organization,
            project=project,
            default_headers=default_headers,
            openai_kwargs=openai_kwargs,
        )
        # openai creates one key per request and reuses it on every retry, but sends it only when told to.
        self._idempotency_header = _headers.IDEMPOTENCY_KEY
        self._prepared_urls: dict[str, tuple[httpx.URL, httpx.URL]] = {}
        self._ncompass_config = config
        self._model = config.model
        self._model_lock = threading.Lock()
        if isinstance(self, openai.OpenAI):
            _OPEN_AT_EXIT.add(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r}, model={self._model!r})"

    def _prepare_url(self, url: str) -> httpx.URL:
        """openai's, remembered: it parses the path and joins it to the base URL again on every request,
        and a client sends the same few paths (valid while ``base_url`` is the same object)."""
        base: httpx.URL = self.base_url
        cached = self._prepared_urls.get(url)
        if cached is not None and cached[0] is base:
            return cached[1]
        prepared: httpx.URL = super()._prepare_url(url)  # type: ignore[misc]
        if len(self._prepared_urls) >= _PREPARED_URLS:
            self._prepared_urls.clear()  # ids in paths (sessions, bookings) must not grow it without end
        self._prepared_urls[url] = (base, prepared)
        return prepared

    def _should_retry(self, response: httpx.Response) -> bool:
        if error_code(response) == "model_stopped":
            return False  # a stopped model stays stopped: fail at once, whatever the headers say
        retry: bool = super()._should_retry(response)  # type: ignore[misc]
        return retry

    def _make_status_error(
        self, err_msg: str, *, body: object, response: httpx.Response
    ) -> openai.APIStatusError:
        error: openai.APIStatusError = status_error(response, body) or super()._make_status_error(  # type: ignore[misc]
            err_msg, body=body, response=response
        )
        return error

    def copy(
        self,
        *,
        api_key: Any = None,
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
        http_client: httpx.Client | httpx.AsyncClient | None = None,
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
        stop_on_sigterm: bool | None = None,
    ) -> Self:
        """A new client with this one's settings, some overridden; it shares the HTTP connection pool."""
        _check_supported(
            {"provider": provider, "data_residency": data_residency, "workload_identity": workload_identity}
        )
        if api_key is not None and custom_env_var is not None:
            raise ValueError("Pass either api_key=... or custom_env_var=..., not both.")
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError(f"api_key must be a string, got {type(api_key).__name__}.")
        same_tenant = api_key is None and custom_env_var is None and isinstance(base_url, NotGiven)
        config = self._ncompass_config
        keep = {
            "model": model or (self._model if same_tenant else config.model),
            "read_timeout": read_timeout,
            "idle_timeout": config.idle_timeout if isinstance(idle_timeout, NotGiven) else idle_timeout,
            "stop_on_sigterm": config.stop_on_sigterm if stop_on_sigterm is None else stop_on_sigterm,
        }
        copied: Self = super().copy(  # type: ignore[misc]
            api_key=key_from_env_var(custom_env_var) if custom_env_var is not None else api_key,
            admin_api_key=admin_api_key,
            organization=organization,
            project=project,
            webhook_secret=webhook_secret,
            websocket_base_url=websocket_base_url,
            base_url=None if isinstance(base_url, NotGiven) else base_url,
            timeout=timeout,
            http_client=http_client,
            max_retries=max_retries,
            default_headers=default_headers,
            set_default_headers=set_default_headers,
            default_query=default_query,
            set_default_query=set_default_query,
            _enforce_credentials=_enforce_credentials,
            _extra_kwargs={**keep, **_extra_kwargs},
        )
        return copied

    with_options = copy
