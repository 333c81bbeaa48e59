"""What ``ChatNCompass`` and ``NCompassLLM`` share: the nCompass fields, identity and billing lifecycle.

``NCompassModel`` is listed before LangChain's OpenAI base in both, so its fields replace that base's
(``NCOMPASS_*`` defaults, none read from ``OPENAI_*``); it names the package to serialisation and puts the
client's lifecycle on the LangChain object itself, so that a LangChain script can open, bound and close a
time-billed session without reaching for the client; it builds both models' ``NCompass`` and
``AsyncNCompass`` (``_new_clients``) and names nCompass to tracing (``_get_ls_params``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.utils import from_env, secret_from_env
from openai import NotGiven, not_given
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from typing_extensions import Self

from .._client import AsyncNCompass, NCompass
from .._exceptions import MissingAPIKeyError
from .._settings import DEFAULT_BASE_URL
from .._version import __version__
from ..resources._wait import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    AsyncProgressCallback,
    ProgressCallback,
)
from ..types import Deployment, Session
from ._http import shared_http_clients

if TYPE_CHECKING:
    from langchain_core.language_models import LangSmithParams

__all__ = ["NCompassModel"]


_INSTEAD = {
    "openai_api_key": "pass `api_key=` or set NCOMPASS_API_KEY",
    "openai_api_base": "pass `base_url=` or set NCOMPASS_BASE_URL",
    "openai_proxy": "pass `http_client=` / `http_async_client=` (httpx clients with `proxy=`)",
    "http_socket_options": "pass `http_client=` / `http_async_client=` (httpx clients with your transport)",
}


def _refuse_openai_only(**fields: object) -> None:
    """LangChain's OpenAI-only fields have no nCompass meaning: a value there is refused, never ignored."""
    for name, value in fields.items():
        if value is not None:
            raise ValueError(
                f"`{name}` is an OpenAI setting that nCompass's models do not take: {_INSTEAD[name]}."
            )


class NCompassModel(BaseModel):
    """The nCompass half of a LangChain model: its settings, its identity, sessions and the deployment."""

    model_name: str | None = Field(default_factory=from_env("NCOMPASS_MODEL", default=None), alias="model")
    """Model name; ``None`` sends none, and the server's model for the key answers."""
    ncompass_api_key: SecretStr | None = Field(
        alias="api_key", default_factory=secret_from_env("NCOMPASS_API_KEY", default=None)
    )
    """The tenant's key; read from ``NCOMPASS_API_KEY`` when not given."""
    ncompass_api_base: str = Field(
        alias="base_url", default_factory=from_env("NCOMPASS_BASE_URL", default=DEFAULT_BASE_URL)
    )
    """The API's URL; read from ``NCOMPASS_BASE_URL`` when not given."""
    # OpenAI's settings, with their environment defaults (OPENAI_API_KEY, OPENAI_ORG_ID, OPENAI_PROXY)
    # removed; a value given is refused (_refuse_openai_only), organization is sent as given.
    openai_api_key: SecretStr | None = None
    openai_api_base: str | None = None
    openai_organization: str | None = Field(default=None, alias="organization")
    openai_proxy: str | None = None

    # hide_input_in_errors: a validation error would otherwise quote the arguments, the API key included.
    model_config = ConfigDict(populate_by_name=True, hide_input_in_errors=True)

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"ncompass_api_key": "NCOMPASS_API_KEY"}

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["ncompass_openai", "langchain"]

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    if TYPE_CHECKING:  # LangChain's, from the base that follows this class in both models' bases
        request_timeout: Any
        max_retries: int | None
        default_headers: Mapping[str, str] | None
        default_query: Mapping[str, object] | None
        http_client: Any
        http_async_client: Any

        def _add_version(self, pkg: str, version: str) -> None: ...

    @model_validator(mode="after")
    def _set_ncompass_version(self) -> Self:
        self._add_version("ncompass-openai", __version__)  # for tracing metadata
        return self

    def _new_clients(self, **openai_only: object) -> tuple[NCompass, AsyncNCompass]:
        """The two clients (no network I/O), after refusing the OpenAI-only settings that were given."""
        _refuse_openai_only(
            openai_api_key=self.openai_api_key,
            openai_api_base=self.openai_api_base,
            openai_proxy=self.openai_proxy,
            **openai_only,
        )
        key = self.ncompass_api_key
        if key is None or not key.get_secret_value().strip():
            raise MissingAPIKeyError()
        kwargs: dict[str, Any] = {
            "api_key": key.get_secret_value(),
            "base_url": self.ncompass_api_base,
            "model": self.model_name,
            "organization": self.openai_organization,
            "default_headers": self.default_headers,
            "default_query": self.default_query,
        }
        # None is LangChain's "not set": the client's defaults (NCOMPASS_TIMEOUT, a 60 s read bound, 4
        # retries) are better than openai's for cold starts, so they are kept unless the user chose otherwise.
        if self.request_timeout is not None:
            kwargs["timeout"] = self.request_timeout
        if self.max_retries is not None:
            kwargs["max_retries"] = self.max_retries
        shared = shared_http_clients(self.ncompass_api_base)
        return (
            NCompass(**kwargs, http_client=self.http_client or shared[0]),
            AsyncNCompass(**kwargs, http_client=self.http_async_client or shared[1]),
        )

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params: LangSmithParams = super()._get_ls_params(stop=stop, **kwargs)  # type: ignore[misc]
        params["ls_provider"] = "ncompass"
        client = self._ncompass_clients()[0]
        model = kwargs.get("model") or self.model_name or getattr(client, "_model", None)
        if model:
            params["ls_model_name"] = model
        else:  # the key's model, not looked up yet: tracing gets no name rather than a wrong one
            params.pop("ls_model_name", None)
        return params

    def _ncompass_clients(self) -> tuple[NCompass, AsyncNCompass]:
        raise NotImplementedError

    @contextlib.contextmanager
    def session(
        self,
        *,
        idle_timeout: float | NotGiven | None = not_given,
        max_duration: float | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Iterator[Session]:
        """Starts a time-billed session and stops it when the block ends, however it ends.

        Args:
            idle_timeout: Idle lease, seconds (default: the client's, 900 s).
            max_duration: Seconds after which the server stops the session.
            metadata: Free-form JSON stored with the session.
        """
        with self._ncompass_clients()[0].session(
            idle_timeout=idle_timeout, max_duration=max_duration, metadata=metadata
        ) as session:
            yield session

    @contextlib.asynccontextmanager
    async def asession(
        self,
        *,
        idle_timeout: float | NotGiven | None = not_given,
        max_duration: float | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> AsyncIterator[Session]:
        """``session()`` for async code: stops the session however the block ends, cancellation included.

        Args:
            idle_timeout: Idle lease, seconds (default: the client's, 900 s).
            max_duration: Seconds after which the server stops the session.
            metadata: Free-form JSON stored with the session.
        """
        async with self._ncompass_clients()[1].session(
            idle_timeout=idle_timeout, max_duration=max_duration, metadata=metadata
        ) as session:
            yield session

    def ensure_running(
        self,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_progress: ProgressCallback | None = None,
    ) -> Deployment:
        """Starts the model if it is not running or starting, then waits until it is ready.

        Args:
            timeout: Seconds to wait at most; ``None`` waits without deadline.
            poll_interval: Shortest wait between two status requests, seconds.
            on_progress: Called with every ``Deployment`` seen.
        """
        return self._ncompass_clients()[0].deployment.ensure_running(
            timeout=timeout, poll_interval=poll_interval, on_progress=on_progress
        )

    async def aensure_running(
        self,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_progress: AsyncProgressCallback | None = None,
    ) -> Deployment:
        """``ensure_running()`` for async code.

        Args:
            timeout: Seconds to wait at most; ``None`` waits without deadline.
            poll_interval: Shortest wait between two status requests, seconds.
            on_progress: Called (and awaited, if it returns an awaitable) with every ``Deployment`` seen.
        """
        return await self._ncompass_clients()[1].deployment.ensure_running(
            timeout=timeout, poll_interval=poll_interval, on_progress=on_progress
        )
