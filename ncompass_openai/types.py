"""Typed results of nCompass's own API (the protocol's "Sessions", "Deployment" and "Bookings").

Unknown fields sent by a newer server are kept. The local server's OpenAPI schema uses the same models.
"""

from __future__ import annotations

from typing import Any, Literal

from openai import BaseModel
from pydantic import Field

__all__ = [
    "Booking",
    "BookingList",
    "Deployment",
    "DeploymentState",
    "Session",
    "SessionList",
    "SessionUsage",
]

DeploymentState = Literal["stopped", "starting", "running", "stopping", "failed"]


class SessionUsage(BaseModel):
    """The tokens of a session's requests (billing is by time; these are for the record)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class Session(BaseModel):
    """A time-billed session: billing runs from ``started_at`` to ``stopped_at``."""

    id: str
    object: Literal["session"] = "session"
    status: Literal["active", "stopped"]
    started_at: float
    stopped_at: float | None = None
    stop_reason: Literal["client", "idle_timeout", "max_duration", "replaced"] | None = None
    billed_seconds: float = 0.0
    idle_timeout: float | None = None
    max_duration: float | None = None
    requests: int = 0
    usage: SessionUsage = Field(default_factory=SessionUsage)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def implicit(self) -> bool:
        """Opened by the server for inference outside a session (``metadata["implicit"]``)."""
        return bool(self.metadata.get("implicit"))


class Deployment(BaseModel):
    """The tenant's model deployment and where it is in its lifecycle."""

    object: Literal["deployment"] = "deployment"
    model: str
    state: DeploymentState
    ready: bool
    state_since: float
    last_request_at: float | None = None
    idle_shutdown: float
    estimated_ready_at: float | None = None
    error: str | None = None


class Booking(BaseModel):
    """A keep-warm window: the model is ready at ``start_at`` and not idle-stopped before ``end_at``."""

    id: str
    object: Literal["booking"] = "booking"
    start_at: float
    end_at: float
    note: str = ""
    status: Literal["scheduled", "active", "finished", "cancelled"]


class SessionList(BaseModel):
    """``GET /v1/sessions``: newest first."""

    object: Literal["list"] = "list"
    data: list[Session] = Field(default_factory=list)


class BookingList(BaseModel):
    """``GET /v1/deployment/bookings``: soonest first."""

    object: Literal["list"] = "list"
    data: list[Booking] = Field(default_factory=list)
