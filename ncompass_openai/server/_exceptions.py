"""What the server's parts raise: domain errors that know nothing of HTTP.

The runtime, the backends, the stores and the deployment manager raise these; ``api/_errors.py`` is the
one place that turns each into the protocol's answer (status, OpenAI error shape, headers).
"""

from __future__ import annotations

__all__ = [
    "ChatTemplateError",
    "ContextLengthError",
    "InvalidRequest",
    "ModelLoadError",
    "ModelNotRunning",
    "ModelUnavailableError",
    "NotFound",
    "QueueFullError",
    "Unauthenticated",
    "UpstreamError",
]


class ChatTemplateError(ValueError):
    """The chat template could not render these messages; the message says why."""


class ModelLoadError(RuntimeError):
    """``serve``: the model failed to load at boot with autostart on, so the server ended."""


class QueueFullError(Exception):
    """The tenant already has as many requests queued or running as allowed (the route answers 429)."""

    def __init__(self, retry_after: int, limit: int) -> None:
        self.retry_after, self.limit = retry_after, limit
        super().__init__(
            f"Too many requests in flight for this API key (at most {limit} queued or running): wait for "
            f"one to finish and retry in {retry_after} s."
        )


class ContextLengthError(ValueError):
    """A prompt plus ``max_tokens`` does not fit the model's context (the route answers 400)."""

    def __init__(self, prompt_tokens: int, max_tokens: int, context_length: int, index: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length
        self.index = index
        super().__init__(
            f"This model's maximum context length is {context_length} tokens, but prompt {index} has "
            f"{prompt_tokens} tokens and max_tokens is {max_tokens}: shorten the prompt or lower max_tokens."
        )


class ModelUnavailableError(RuntimeError):
    """The model is not loaded (or was unloaded while the request waited): the route answers 503."""


class _Refusal(Exception):
    """A request answered with an error that names the field (``param``) and a ``code``."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(_Refusal):
    """A request the server refuses: ``param`` names the field to change (answered 400).

    Not a ``ValueError``: raised inside a body's validator, it passes through pydantic as itself, with its
    ``param``, instead of becoming one more validation error.
    """


class Unauthenticated(_Refusal):
    """No API key, or one that is not the server's (answered 401 ``invalid_api_key``)."""


class NotFound(_Refusal, LookupError):
    """An unknown model or id, or another tenant's id (answered 404 with ``code``)."""


class ModelNotRunning(Exception):
    """The tenant's deployment cannot answer now (answered 503 ``model_starting`` or ``model_stopped``).

    Args:
        state: The deployment's state.
        retry_after: Seconds until it should be ready (``starting`` only).
        error: Why its last start failed (``failed``), or why it cannot answer yet (``starting``).
    """

    def __init__(self, state: str, *, retry_after: float | None = None, error: str | None = None) -> None:
        super().__init__(f"The model is not running (state: {state}).")
        self.state = state
        self.retry_after = retry_after
        self.error = error


class UpstreamError(Exception):
    """The gateway's upstream refused or failed a request (``api/_errors.py`` picks the status).

    Args:
        message: What happened, for the tenant (never the upstream key).
        status: The upstream's HTTP status; ``None`` when it never answered or broke off mid-stream.
        retry_after: The upstream's ``Retry-After`` (a 429 or 503), passed on.
        param: The field the upstream named, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.param = param


class ClientGone(Exception):
    """The client hung up before its answer began: the request was cancelled (answered 499, unseen)."""
