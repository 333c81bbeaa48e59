"""The request body limit: a body over ``max_body_bytes`` answers 413 before any route reads it."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..api._errors import error_body

__all__ = ["BodyLimitMiddleware"]


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        error_body(
            f"The request body is larger than this server's limit of {limit} bytes. Send a shorter "
            "prompt, or raise the limit with `ncompass serve --max-body-bytes` "
            "(NCOMPASS_SERVER_MAX_BODY_BYTES).",
            "invalid_request_error",
            code="request_too_large",
        )
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Reads the whole body (at most ``limit`` bytes) first, then hands it to the app unchanged.

    Later ``receive`` calls go to the server again, so a streaming route still sees the client's
    disconnect.

    Args:
        app: The wrapped ASGI app.
        limit: The largest body accepted, in bytes.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_413(send, self.limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _send_413(send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope.setdefault("state", {})["ncompass_body"] = body
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def buffered_body(scope: Scope) -> bytes | None:
    state: Any = scope.get("state") or {}
    body = state.get("ncompass_body") if isinstance(state, dict) else None
    return body if isinstance(body, bytes) else None
