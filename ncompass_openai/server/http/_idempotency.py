"""``Idempotency-Key``: a repeated POST of one tenant to one route gets the first answer again.

Answers are kept in the ledger for 24 hours, so a retried session start, stop or booking never acts
twice, even across a restart (they are written in batches, a few milliseconds after they are sent,
and at shutdown). Only complete, final answers are kept: a 429, a 503 or a 5xx is worth
retrying for real, a request whose client hung up (499) has no answer, and a streamed answer cannot be
replayed, so those are not stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._headers import IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED
from .._exceptions import Unauthenticated
from ..api._errors import error_body
from ..ledger._answers import AnswerStore, Ident
from ..ledger._auth import AUTHENTICATED, TenantRegistry, parse_authorization
from ._limits import buffered_body

__all__ = ["IdempotencyMiddleware"]

_KEY_HEADER = IDEMPOTENCY_KEY.lower().encode()
_REPLAYED_HEADER = IDEMPOTENT_REPLAYED.lower().encode()
# Not final, so never replayed: their retry must run for real. 499: the client hung up before the
# answer was ready (openai's own timeout retry then comes back with the same key).
_NOT_STORED = {401, 408, 409, 425, 429, 499}
_MAX_KEY_LENGTH = 255
_REUSED = (
    "This `Idempotency-Key` was already used with a different request body. Use a new key for a new request."
)


class IdempotencyMiddleware:
    """Replays stored answers for a repeated ``Idempotency-Key`` (runs inside the body limit).

    Args:
        app: The wrapped ASGI app.
        store: Where the answers are kept.
        tenants: Who a key belongs to (a request with a bad key is left to the route's 401).
    """

    def __init__(self, app: ASGIApp, *, store: AnswerStore, tenants: TenantRegistry) -> None:
        self.app = app
        self.store = store
        self.tenants = tenants
        self._locks: dict[Ident, asyncio.Lock] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        raw_key = headers.get(_KEY_HEADER)
        tenant = None
        if raw_key:
            key_text = parse_authorization(headers.get(b"authorization", b"").decode("latin-1"))
            if key_text is not None:
                try:
                    tenant = self.tenants.authenticate(f"Bearer {key_text}")
                except Unauthenticated:
                    tenant = None  # a bad key: the route answers its 401, and nothing is stored
        if not raw_key or tenant is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[AUTHENTICATED] = tenant  # the route's own check reuses it
        key = raw_key.decode("latin-1")
        if len(key) > _MAX_KEY_LENGTH:
            await _send_json(
                send,
                400,
                error_body(
                    f"`Idempotency-Key` is longer than {_MAX_KEY_LENGTH} characters; send a shorter "
                    "key (a UUID).",
                    "invalid_request_error",
                    param=IDEMPOTENCY_KEY,
                ),
            )
            return
        route = scope["path"]
        fingerprint = hashlib.sha256(buffered_body(scope) or b"").hexdigest()
        ident = (tenant.id, route, key)
        lock = self._locks.setdefault(ident, asyncio.Lock())
        try:
            async with lock:  # a retry that arrives while the first is in flight waits for its answer
                row = await self.store.lookup(ident)
                if row is not None:
                    status, headers_json, body, _ = row
                    stored = json.loads(headers_json)
                    if stored.get("fingerprint") not in (None, fingerprint):
                        await _send_json(
                            send,
                            400,
                            error_body(
                                _REUSED,
                                "invalid_request_error",
                                param=IDEMPOTENCY_KEY,
                                code="idempotency_key_reused",
                            ),
                        )
                        return
                    await _replay(send, status, stored["headers"], body)
                    return
                await self._run_and_store(scope, receive, send, ident, fingerprint)
        finally:
            if not lock.locked() and self._locks.get(ident) is lock:
                del self._locks[ident]

    async def _run_and_store(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ident: Ident,
        fingerprint: str,
    ) -> None:
        status = 0
        response_headers: list[list[str]] = []
        body = bytearray()
        storable = True
        complete = False  # the last body message was sent: a cut-off answer is never kept

        async def capture(message: Message) -> None:
            nonlocal status, storable, complete
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    lname = name.decode("latin-1").lower()
                    if lname == "content-type" and value.startswith(b"text/event-stream"):
                        storable = False
                    if lname not in ("content-length", "date", "server"):
                        response_headers.append([name.decode("latin-1"), value.decode("latin-1")])
            elif message["type"] == "http.response.body" and storable:
                body.extend(message.get("body", b""))
                complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, capture)
        if storable and complete and status and status < 500 and status not in _NOT_STORED:
            # Queued before the key's lock is released: a retry that arrives meanwhile replays it.
            headers_json = json.dumps({"headers": response_headers, "fingerprint": fingerprint})
            self.store.keep(ident, (status, headers_json, bytes(body), time.time()))


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _replay(send: Send, status: int, headers: list[list[str]], body: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    raw.append((_REPLAYED_HEADER, b"true"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
