"""Telling a server without nCompass's lifecycle API apart from an unknown id (the protocol, "Servers
without nCompass's lifecycle API").

A plain OpenAI-compatible server (vLLM, llama.cpp's, llama-cpp-python's, Ollama) answers ``404`` on
``/sessions``, ``/deployment`` and ``/deployment/bookings``. nCompass answers ``404`` there only for an
unknown id, with a ``*_not_found`` code. A route-level 404 is turned into
:class:`LifecycleAPIUnavailableError`; one probe of the same path under ``<base>/v1`` tells whether the
base URL merely lacks ``/v1``. Nothing here does I/O: the clients send the probe.
"""

from __future__ import annotations

from collections.abc import Mapping

import openai

from ._compat import httpx
from ._exceptions import LifecycleAPIUnavailableError

__all__ = ["lifecycle_path", "probe_url", "route_missing", "unavailable_error"]

_LIFECYCLE_ROUTES = ("sessions", "deployment")
# The codes nCompass gives an unknown id: such a 404 is an answer of the lifecycle API, not its absence.
_ID_CODES = ("session_not_found", "booking_not_found", "model_not_found")


def lifecycle_path(base_url: httpx.URL, url: httpx.URL) -> str | None:
    """The path of ``url`` below ``base_url`` (``/deployment``) for a lifecycle route, else ``None``."""
    base = base_url.path.rstrip("/")
    path = url.path
    if not path.startswith(base + "/"):
        return None
    rest = path[len(base) :]
    return rest if rest.split("/")[1] in _LIFECYCLE_ROUTES else None


def route_missing(error: openai.APIStatusError) -> bool:
    """A 404 that says the route does not exist (no nCompass ``*_not_found`` code)."""
    if error.status_code != 404:
        return False
    body = error.body
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    code = inner.get("code") if isinstance(inner, Mapping) else None
    return code not in _ID_CODES


def probe_url(base_url: httpx.URL, path: str) -> httpx.URL | None:
    """``<base>/v1<path>``, the URL to try when the base URL may lack ``/v1``; ``None`` when it has it."""
    base = base_url.path.rstrip("/")
    if base.endswith("/v1"):
        return None
    return base_url.copy_with(path=f"{base}/v1{path}")


def unavailable_error(
    base_url: httpx.URL, path: str, error: openai.APIStatusError, *, probe_status: int | None
) -> LifecycleAPIUnavailableError:
    """The error to raise; ``probe_status`` is what ``<base>/v1<path>`` answered (``None``: not probed)."""
    base = str(base_url).rstrip("/")
    suggested = f"{base}/v1" if probe_status is not None and probe_status != 404 else None
    return LifecycleAPIUnavailableError(
        base_url=base, path=path, suggested_base_url=suggested, response=error.response, body=error.body
    )
