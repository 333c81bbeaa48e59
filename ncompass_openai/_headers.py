"""The HTTP header names of the protocol, in one place for the client, the guard and the server."""

from __future__ import annotations

__all__ = [
    "CLIENT",
    "IDEMPOTENCY_KEY",
    "IDEMPOTENT_REPLAYED",
    "MAX_IN_FLIGHT",
    "RETRY_AFTER",
    "SESSION",
    "SESSION_OPENED",
    "SHOULD_RETRY",
]

IDEMPOTENCY_KEY = "Idempotency-Key"
"""Sent by the client on every POST, the same on each retry; the server replays the first answer."""
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"
"""``true`` on an answer the server replayed for a repeated ``Idempotency-Key``."""
CLIENT = "X-NCompass-Client"
"""``ncompass-openai/<version>``: which client sent the request."""
RETRY_AFTER = "Retry-After"
"""Seconds to wait before retrying a ``429`` or a ``503 model_starting``."""
SHOULD_RETRY = "x-should-retry"
"""openai's retry hint: ``true`` on ``503 model_starting``, ``false`` on ``503 model_stopped``."""
SESSION = "NCompass-Session"
"""On every inference answer: the id of the session its time is billed to."""
SESSION_OPENED = "NCompass-Session-Opened"
"""``true`` on the inference answer whose request opened that (implicit) session."""
MAX_IN_FLIGHT = "NCompass-Max-In-Flight"
"""On every inference answer and ``429``: the requests a key may have queued or running at once."""
