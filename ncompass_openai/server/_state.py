"""Everything a request needs, kept on ``app.state.server`` (never in module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ._settings import ServerSettings
from .backends._base import Backend
from .ledger._auth import TenantRegistry
from .ledger._bookings import BookingStore
from .ledger._db import Database
from .ledger._deployment import DeploymentManager
from .ledger._response_store import ResponseStore
from .ledger._sessions import SessionStore

__all__ = ["ServerState", "TokenMeter"]


class TokenMeter(Protocol):
    """What billing reports each answer's tokens to (``--metrics``: ``http/_metrics.py``)."""

    def count_tokens(self, route: str, prompt_tokens: int, completion_tokens: int) -> None: ...


@dataclass
class ServerState:
    settings: ServerSettings
    db: Database
    tenants: TenantRegistry
    sessions: SessionStore
    bookings: BookingStore
    deployments: DeploymentManager
    backend: Backend
    responses: ResponseStore
    created: int
    metrics: TokenMeter | None = None  # ``--metrics``: the counters of GET /metrics
    extra: dict[str, Any] = field(default_factory=dict)
