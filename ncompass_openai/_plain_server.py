"""What a route-level 404 means: a server without nCompass's lifecycle API, or a base URL without ``/v1``
(the protocol, "Servers without nCompass's lifecycle API").

A plain OpenAI-compatible server (vLLM, llama.cpp's, llama-cpp-python's, Ollama) answers ``404`` on
``/sessions``, ``/deployment`` and ``/deployment/bookings``. nCompass answers ``404`` there only for an
unknown id, with a ``*_not_found`` code. A route-level 404 of a lifecycle route is turned into
:class:`LifecycleAPIUnavailableError`; of any other route (``/models``, ``/chat/completions``), into
:class:`BaseURLError` when the base URL lacks ``/v1``. One probe of the same path under ``<base>/v1``
tells whether the base URL merely lacks it. Nothing here does I/O: the clients send the probe.
"""

from __future__ import annotations

from collections.abc import Mapping

import openai

from ._compat import httpx
from ._exceptions import BaseURLError, LifecycleAPIUnavailableError

__all__ = ["not_found_error", "probe_for", "route_missing"]

_LIFECYCLE_ROUTES = ("sessions", "deployment")
# The codes nCompass gives an unknown id: such a 404 is an answer of the lifecycle API, not its absence.
_ID_CODES = ("session_not_found", "booking_not_found", "model_not_found")


def _path_below(base_url: httpx.URL, url: httpx.URL) -> str | None:
    """The path of ``url`` below ``base_url`` (``/deployment``, ``/models``), else ``None``."""
    base = base_url.path.rstrip("/")
    path = url.path
    return path[len(base) :] if path.startswith(base + "/") else None


def _lifecycle(path: str) -> bool:
    return path.split("/")[1] in _LIFECYCLE_ROUTES


def probe_for(base_url: httpx.URL, error: openai.NotFoundError) -> tuple[str, httpx.URL | None] | None:
    """For a route-level 404 that says more than openai's error: the path, and the URL to probe (if any)."""
    if not route_missing(error):
        return None
    path = _path_below(base_url, error.response.request.url)
    if path is None:
        return None
    probe = _probe_url(base_url, path)
    if probe is None and not _lifecycle(path):
        return None  # the base URL has /v1: a route the server does not have, as openai's error says
    return path, probe


def route_missing(error: openai.APIStatusError) -> bool:
    """A 404 that says the route does not exist (no nCompass ``*_not_found`` code)."""
    if error.status_code != 404:
        return False
    body = error.body
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    code = inner.get("code") if isinstance(inner, Mapping) else None
    return code not in _ID_CODES


def _probe_url(base_url: httpx.URL, path: str) -> httpx.URL | None:
    """``<base>/v1<path>``, the URL to try when the base URL may lack ``/v1``; ``None`` when it has it."""
    base = base_url.path.rstrip("/")
    if base.endswith("/v1"):
        return None
    return base_url.copy_with(path=f"{base}/v1{path}")


def not_found_error(
    base_url: httpx.URL, path: str, error: openai.NotFoundError, *, probe_status: int | None
) -> openai.NotFoundError | None:
    """The error to raise instead (``None``: openai's own); ``probe_status`` is what ``<base>/v1<path>``
    answered (``None``: not probed)."""
    base = str(base_url).rstrip("/")
    suggested = f"{base}/v1" if probe_status is not None and probe_status != 404 else None
    if _lifecycle(path):
        return LifecycleAPIUnavailableError(
            base_url=base, path=path, suggested_base_url=suggested, response=error.response, body=error.body
        )
    if suggested is None:
        return None
    return BaseURLError(
        base_url=base, path=path, suggested_base_url=suggested, response=error.response, body=error.body
    )
