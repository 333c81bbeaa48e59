"""How nCompass's ``503`` answers map onto openai's retries and errors (the protocol, "Errors").

``503 model_starting`` (``x-should-retry: true``, ``Retry-After``) is left to openai's retry loop, which
waits as told within the retry budget. ``503 model_stopped`` is never retried, whatever the headers say,
and raises :class:`ModelNotRunningAPIError`. Every other status keeps openai's own error class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import openai

from ._compat import httpx
from ._exceptions import ModelNotRunningError

__all__ = ["ModelNotRunningAPIError", "error_code", "status_error"]


_STATE = re.compile(r"\(state: (\w+)\)")
_FAILED = re.compile(r"Its last start failed: (.*?)\.? (?:Fix|Start) ")


class ModelNotRunningAPIError(ModelNotRunningError, openai.InternalServerError):
    """A ``503 model_stopped`` answer: a ``ModelNotRunningError`` that is also openai's status error."""

    def __init__(self, *, detail: str | None, response: httpx.Response, body: object) -> None:
        # The client's own message (what to call, which command to run); the server's is kept in .detail.
        # The state and a failed start's error are read from the server's message (the protocol's words).
        found = _STATE.search(detail or "")
        state = found.group(1) if found else "stopped"
        failed = _FAILED.search(detail or "") if state == "failed" else None
        error = failed.group(1) if failed else None
        own = ModelNotRunningError(state, error=error)
        openai.InternalServerError.__init__(self, str(own), response=response, body=body)
        self.state = state
        self.error = error
        self.detail = detail


def error_code(response: httpx.Response) -> str | None:
    """The ``error.code`` of a 503 answer whose body has been read, else ``None``."""
    if response.status_code != 503:
        return None
    try:
        body = response.json()
    except Exception:  # a streamed answer not read yet, or not JSON: decide on the headers alone
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def status_error(response: httpx.Response, body: object) -> openai.APIStatusError | None:
    """The error to raise for a stopped model's 503; ``None`` leaves the answer to openai's mapping."""
    error = body.get("error", body) if isinstance(body, Mapping) else None
    if response.status_code != 503 or not isinstance(error, Mapping):
        return None
    if error.get("code") == "model_stopped" or (
        error.get("type") == "model_not_running" and error.get("code") != "model_starting"
    ):
        message = error.get("message")
        return ModelNotRunningAPIError(
            detail=message if isinstance(message, str) else None, response=response, body=error
        )
    return None


ModelNotRunningAPIError.__module__ = "ncompass_openai"  # as tracebacks show it: where users import it from
