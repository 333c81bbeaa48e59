"""Which session an inference request is billed to, and its usage recorded there.

Inference never needs a session call: the first answered inference request of a key with no active
session opens an *implicit* one (``metadata: {"implicit": true}``, the ``implicit_idle_timeout`` lease),
starting when that request arrived. A request the server refuses (a 4xx, a 503) opens nothing. Every
inference answer names its session in ``NCompass-Session``; the one that opened it also says
``NCompass-Session-Opened: true``, so the client's billing guard can stop it at exit.
"""

from __future__ import annotations

import time

from ..._headers import MAX_IN_FLIGHT, SESSION, SESSION_OPENED
from .._state import ServerState
from ..ledger._auth import Tenant

__all__ = ["Billing"]


class Billing:
    """One inference request's billing: opened (at most once) when its answer is known to be one.

    ``route``: the request's route, which the metrics count its tokens under.
    """

    def __init__(self, state: ServerState, tenant: Tenant, route: str) -> None:
        self._state = state
        self._tenant = tenant
        self._route = route
        self._arrived = time.time()
        self.session_id: str | None = None
        self.opened = False

    async def open(self) -> None:
        """Bill to the active session, or open the implicit one (idempotent)."""
        if self.session_id is not None:
            return
        state = self._state
        data, self.opened = await state.db.run(
            state.sessions.open_implicit,
            self._tenant.id,
            since=self._arrived,
            idle_timeout=state.settings.implicit_idle_timeout,
        )
        self.session_id = data["id"]

    async def record(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Add the request's tokens to its session (the active one if none was opened: a refused request)."""
        state = self._state
        if state.metrics is not None:
            state.metrics.count_tokens(self._route, prompt_tokens, completion_tokens)
        await state.db.run(
            state.sessions.record_usage, self._tenant.id, self.session_id, prompt_tokens, completion_tokens
        )

    def headers(self) -> dict[str, str]:
        headers = {MAX_IN_FLIGHT: str(self._state.backend.max_queue_per_key)}
        if self.session_id is None:
            return headers
        headers[SESSION] = self.session_id
        if self.opened:
            headers[SESSION_OPENED] = "true"
        return headers
