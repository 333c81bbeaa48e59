"""What the server's parts raise: domain errors that know nothing of HTTP.

The runtime, the stores and the deployment manager raise these; ``_errors.py`` is the one place that
turns each into the protocol's answer (status, OpenAI error shape, headers).
"""

from __future__ import annotations

from ._chat_template import ChatTemplateError

__all__ = ["ChatTemplateError", "ContextLengthError", "ModelUnavailableError", "QueueFullError"]


class QueueFullError(Exception):
    """The tenant already has as many requests queued or running as allowed (the route answers 429)."""

    def __init__(self, retry_after: int, limit: int) -> None:
        self.retry_after = retry_after
        self.limit = limit
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
