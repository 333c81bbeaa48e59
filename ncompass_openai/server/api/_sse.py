"""Server-Sent Events framing, done once: ``data: <json>`` events and the final ``data: [DONE]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi.responses import StreamingResponse

__all__ = ["DONE", "event", "response"]

DONE = "data: [DONE]\n\n"
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _dumps(payload: Any) -> str:
    """Compact JSON (orjson, in the server extra: about 4x faster than json at an event)."""
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS).decode()


def event(payload: Any, name: str | None = None) -> str:
    """One event carrying ``payload`` as compact JSON; ``name`` its ``event:`` line (the Responses API's)."""
    if name is not None:
        return f"event: {name}\ndata: {_dumps(payload)}\n\n"
    return f"data: {_dumps(payload)}\n\n"


def response(body: AsyncIterator[str], headers: dict[str, str] | None = None) -> StreamingResponse:
    """A streamed answer of events (no caching, no proxy buffering)."""
    return StreamingResponse(body, media_type="text/event-stream", headers={**_HEADERS, **(headers or {})})
