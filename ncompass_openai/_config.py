"""How a client's constructor arguments and the ``NCOMPASS_*`` environment become one configuration.

Arguments beat the environment; only ``NCOMPASS_*`` variables are read (openai's own ``OPENAI_*``
variables are kept away from nCompass requests by :func:`isolate_from_openai_env`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import NotGiven
from pydantic import ValidationError

from . import _headers
from ._compat import HTTPX_DEFAULT_TIMEOUT, httpx
from ._exceptions import MissingAPIKeyError
from ._settings import NCompassSettings
from ._version import __version__

__all__ = ["ClientConfig", "isolate_from_openai_env", "key_from_env_var", "resolve_config"]

_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class ClientConfig:
    """What a client was configured with, after arguments and environment were merged."""

    api_key: str = field(repr=False)
    base_url: str
    model: str | None
    timeout: float | httpx.Timeout | None
    read_timeout: float | None
    max_retries: int
    idle_timeout: float | None
    stop_on_sigterm: bool = True


def key_from_env_var(name: str) -> str:
    """Reads the API key from the environment variable ``name`` (the 0.0.x ``custom_env_var``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"custom_env_var must be the name of an environment variable, got {name!r}.")
    value = os.environ.get(name, "").strip()
    if not value:
        raise MissingAPIKeyError(env_var=name)
    return value


def resolve_config(
    *,
    api_key: object,
    base_url: str | httpx.URL | None,
    model: str | None,
    custom_env_var: str | None,
    timeout: float | httpx.Timeout | NotGiven | None,
    read_timeout: float | None,
    max_retries: int | None,
    idle_timeout: float | NotGiven | None,
    http_client: object,
    stop_on_sigterm: bool | None = None,
) -> ClientConfig:
    """Merges a constructor's arguments with ``NCompassSettings`` (arguments win)."""
    if api_key is not None and custom_env_var is not None:
        raise ValueError(
            "Pass either api_key=... or custom_env_var=... (the variable to read the key from), not both."
        )
    if api_key is not None and not isinstance(api_key, str):
        raise TypeError(f"api_key must be a string, got {type(api_key).__name__}.")
    overrides: dict[str, Any] = {
        "base_url": str(base_url) if base_url is not None else None,
        "model": model,
        "timeout": timeout if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else None,
        "read_timeout": read_timeout,
        "max_retries": max_retries,
        "stop_on_sigterm": stop_on_sigterm,
    }
    if not isinstance(idle_timeout, NotGiven):
        overrides["idle_timeout"] = idle_timeout
    try:
        given = tuple((k, v) for k, v in overrides.items() if v is not None or k == "idle_timeout")
        settings = _settings(given, _ncompass_env())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ValueError(
            f"Invalid nCompass client setting ({problems}). Fix the argument or the matching NCOMPASS_* "
            "environment variable."
        ) from None

    if custom_env_var is not None:
        key = key_from_env_var(custom_env_var)
    elif isinstance(api_key, str):
        key = api_key.strip()
        if not key:
            raise MissingAPIKeyError()
    elif settings.api_key is not None and settings.api_key.get_secret_value().strip():
        key = settings.api_key.get_secret_value().strip()
    else:
        raise MissingAPIKeyError()

    url = settings.base_url.strip()
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r} (NCOMPASS_BASE_URL).")

    return ClientConfig(
        api_key=key,
        base_url=url,
        model=settings.model or None,
        timeout=_compose_timeout(timeout, settings, read_timeout, http_client),
        read_timeout=settings.read_timeout,
        max_retries=settings.max_retries,
        idle_timeout=settings.idle_timeout,
        stop_on_sigterm=settings.stop_on_sigterm,
    )


@functools.lru_cache(maxsize=64)
def _settings(given: tuple[tuple[str, Any], ...], env: tuple[tuple[str, str], ...]) -> NCompassSettings:
    """``NCompassSettings`` for these arguments and this environment (``env`` is the cache key only).

    Building one reads and validates the environment, about 0.8 ms: as long as arguments and
    ``NCOMPASS_*`` variables are the same, clients (LangChain makes two per model) share the result.
    """
    return NCompassSettings(**dict(given))


def _ncompass_env() -> tuple[tuple[str, str], ...]:
    # pydantic-settings matches names case-insensitively: so does the key.
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("NCOMPASS_")))


def _compose_timeout(
    timeout: float | httpx.Timeout | NotGiven | None,
    settings: NCompassSettings,
    read_timeout: float | None,
    http_client: object,
) -> float | httpx.Timeout | None:
    # openai's default lets a silent stream hang for 600 s; a read timeout of its own bounds the silence
    # between two chunks without capping how long a healthy, talking stream may run.
    if isinstance(timeout, httpx.Timeout):
        if read_timeout is not None:
            return httpx.Timeout(
                connect=timeout.connect, read=read_timeout, write=timeout.write, pool=timeout.pool
            )
        return timeout
    if timeout is None:
        return None
    if isinstance(timeout, NotGiven):
        client_timeout = getattr(http_client, "timeout", None)
        if isinstance(client_timeout, httpx.Timeout) and client_timeout != HTTPX_DEFAULT_TIMEOUT:
            return client_timeout  # as openai does: an http_client built with a timeout keeps it
    total = settings.timeout
    return httpx.Timeout(total, connect=min(_CONNECT_TIMEOUT, total), read=min(settings.read_timeout, total))


def isolate_from_openai_env(
    client: openai.OpenAI | openai.AsyncOpenAI,
    *,
    organization: str | None,
    project: str | None,
    default_headers: Mapping[str, str] | None,
    openai_kwargs: Mapping[str, Any],
) -> None:
    """Undoes what openai's constructor read from ``OPENAI_*`` variables: none of it may reach nCompass."""
    client.organization = organization
    client.project = project
    client.admin_api_key = openai_kwargs.get("admin_api_key")
    client.webhook_secret = openai_kwargs.get("webhook_secret")
    # OPENAI_CUSTOM_HEADERS was merged into the custom headers: keep only what the caller passed.
    client._custom_headers = {_headers.CLIENT: f"ncompass-openai/{__version__}", **(default_headers or {})}
    if hasattr(client, "_ambient_authorizations"):
        client._ambient_authorizations = frozenset()
