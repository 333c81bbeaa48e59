"""Small helpers shared by the nCompass resources: per-request options, and argument checks (raised
before any request)."""

from __future__ import annotations

import math
from typing import Any, TypedDict
from urllib.parse import quote

from openai import NotGiven
from openai._base_client import make_request_options
from openai._types import Body, Headers, Query
from openai._types import RequestOptions as OpenAIRequestOptions

from .._compat import httpx
from .._settings import NCompassSettings

__all__ = [
    "RequestOptions",
    "check_id",
    "check_positive",
    "client_setting",
    "path_id",
    "request_options",
]


class RequestOptions(TypedDict, total=False):
    """What every resource method takes besides its own arguments, as openai's methods do."""

    extra_headers: Headers | None
    """Extra HTTP headers for this request."""
    extra_query: Query | None
    """Extra query parameters for this request."""
    extra_body: Body | None
    """Extra JSON fields for this request."""
    timeout: float | httpx.Timeout | NotGiven | None
    """Timeout of this request, overriding the client's."""


def request_options(options: RequestOptions, *, query: Query | None = None) -> OpenAIRequestOptions:
    """openai's request options from a method's ``**options`` (and its own query parameters)."""
    return make_request_options(query=query, **options)


def check_id(name: str, value: object, prefix: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string like '{prefix}...', got {value!r}.")
    return value.strip()


def path_id(value: str) -> str:
    return quote(value, safe="")


def check_positive(name: str, value: object, *, allow_none: bool = True) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required: pass a number of seconds greater than 0.")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds greater than 0, got {value!r}.")
    return float(value)


def client_setting(client: object, name: str) -> Any:
    """A value of the client's merged configuration (a plain openai client gets the defaults)."""
    config = getattr(client, "_ncompass_config", None)
    if config is not None:
        return getattr(config, name)
    return NCompassSettings.model_fields[name].default
