"""Server-Sent Events framing, done once: ``data: <json>`` events and the final ``data: [DONE]``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

__all__ = ["DONE", "event", "response"]

DONE = "data: [DONE]\n\n"
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
try:  # orjson (in the server extra) encodes an event about 4x faster than json
    import orjson

    def _dumps(payload: Any) -> str:
        return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS).decode()

except ImportError:  # pragma: no cover - a server installed without its extra
    _dumps = json.JSONEncoder(separators=(",", ":")).encode


def event(payload: Any, name: str | None = None) -> str:
    """One event carrying ``payload`` as compact JSON; ``name`` its ``event:`` line (the Responses API's)."""
    if name is not None:
        return f"event: {name}\ndata: {_dumps(payload)}\n\n"
    return f"data: {_dumps(payload)}\n\n"


def response(body: AsyncIterator[str], headers: dict[str, str] | None = None) -> StreamingResponse:
    """A streamed answer of events (no caching, no proxy buffering)."""
    return StreamingResponse(body, media_type="text/event-stream", headers={**_HEADERS, **(headers or {})})
