"""nCompass's own routes: sessions (time billing), the deployment lifecycle and its bookings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..._time import to_unix
from ...types import Booking, BookingList, Deployment, Session, SessionList
from .._exceptions import InvalidRequest
from ._dependencies import AuthTenant, json_body, server_state
from ._openapi import NO_BODY, answers, query_parameters
from ._openapi import json_body as documented_body

__all__ = ["REQUEST_MODELS", "router"]

router = APIRouter()

_MAX_METADATA_BYTES = 16 * 1024
_MAX_LIST = 100


class SessionStartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idle_timeout: float | None = Field(default=None, gt=0)
    max_duration: float | None = Field(default=None, gt=0)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        import json

        if len(json.dumps(value)) > _MAX_METADATA_BYTES:
            raise ValueError(f"metadata must serialise to at most {_MAX_METADATA_BYTES} bytes of JSON")
        if "implicit" in value:
            raise ValueError("the key `implicit` is reserved: the server sets it on the sessions it opens")
        return value


# Unix seconds (above 1e11 is milliseconds by mistake), or ISO 8601 with an offset (see `_time`).
_Time = Annotated[float, Field(ge=0, le=1e11)] | str


class BookingCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_at: _Time
    end_at: _Time
    note: str = Field(default="", max_length=1000)


REQUEST_MODELS = (SessionStartRequest, BookingCreateRequest)
# Documented, not enforced: an id of another shape is simply not found (404), like an unknown one.
SessionId = Annotated[
    str, Path(description="A session id.", json_schema_extra={"pattern": "^sess_[A-Za-z0-9]+$"})
]
BookingId = Annotated[
    str, Path(description="A booking id.", json_schema_extra={"pattern": "^book_[A-Za-z0-9]+$"})
]


def _server_time(value: float | str, field: str) -> float:
    """The protocol's rule on the server: unix seconds or ISO 8601 with an offset (see ``_time``)."""
    try:
        return to_unix(value, f"`{field}`", naive="refuse")
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(str(exc), param=field) from None


# -- sessions -------------------------------------------------------------------------------------


@router.post(
    "/v1/sessions",
    response_model=None,
    responses=answers(Session, statuses=(201, 200)),
    openapi_extra=documented_body(SessionStartRequest, required=False),
)
async def start_session(
    request: Request,
    tenant: AuthTenant,
    body: Annotated[SessionStartRequest, json_body(SessionStartRequest, optional=True)],
) -> JSONResponse:
    state = server_state(request)
    data, created = await state.db.run(
        state.sessions.start,
        tenant.id,
        idle_timeout=body.idle_timeout,
        max_duration=body.max_duration,
        metadata=body.metadata,
    )
    return JSONResponse(state.sessions.to_json(data), status_code=201 if created else 200)


@router.get(
    "/v1/sessions",
    response_model=None,
    responses=answers(SessionList),
    openapi_extra=query_parameters(
        ("status", {"type": "string", "enum": ["active", "stopped"]}, "Only sessions in this state."),
        (
            "limit",
            {"type": "integer", "minimum": 1, "maximum": _MAX_LIST, "default": 20},
            "At most this many.",
        ),
    ),
)
async def list_sessions(request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    # An empty `status=` or `limit=` is a mistake, not "no filter": refused like any other value.
    status = request.query_params.get("status")
    if status is not None and status not in ("active", "stopped"):
        raise InvalidRequest(f"`status` must be 'active' or 'stopped', not {status!r}.", param="status")
    raw_limit = request.query_params.get("limit")
    limit = 20
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _MAX_LIST:
            raise InvalidRequest(f"`limit` must be a whole number from 1 to {_MAX_LIST}.", param="limit")
        limit = int(raw_limit)
    rows = await state.db.run(state.sessions.list_for, tenant.id, status=status, limit=limit)
    return {"object": "list", "data": [state.sessions.to_json(r) for r in rows]}


@router.get("/v1/sessions/{session_id}", response_model=None, responses=answers(Session, errors=(404,)))
async def retrieve_session(session_id: SessionId, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    return state.sessions.to_json(await state.db.run(state.sessions.get, tenant.id, session_id))


_SESSION_CHANGE: dict[str, Any] = {
    "response_model": None,
    "responses": answers(Session, errors=(404,)),
    "openapi_extra": NO_BODY,
}


@router.post("/v1/sessions/{session_id}/stop", **_SESSION_CHANGE)
async def stop_session(session_id: SessionId, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    return state.sessions.to_json(await state.db.run(state.sessions.stop, tenant.id, session_id))


@router.post("/v1/sessions/{session_id}/heartbeat", **_SESSION_CHANGE)
async def heartbeat_session(session_id: SessionId, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    return state.sessions.to_json(await state.db.run(state.sessions.heartbeat, tenant.id, session_id))


# -- deployment -----------------------------------------------------------------------------------


@router.get("/v1/deployment", response_model=None, responses=answers(Deployment))
async def deployment_status(request: Request, tenant: AuthTenant) -> dict[str, Any]:
    return server_state(request).deployments.to_json(tenant.id)


_DEPLOYMENT_CHANGE: dict[str, Any] = {
    "response_model": None,
    "responses": answers(Deployment, statuses=(200, 202)),
    "openapi_extra": NO_BODY,
}


def _changed(request: Request, tenant: AuthTenant, action: str, settled: str) -> JSONResponse:
    """Start or stop: 200 when the deployment is already ``settled``, 202 while it gets there."""
    state = server_state(request)
    refusal = state.backend.lifecycle_refusal
    if refusal is not None:
        raise InvalidRequest(refusal, code="lifecycle_unavailable")
    deployments = state.deployments
    getattr(deployments, action)(tenant.id)
    status = 200 if deployments.state(tenant.id) == settled else 202
    return JSONResponse(deployments.to_json(tenant.id), status_code=status)


@router.post("/v1/deployment/start", **_DEPLOYMENT_CHANGE)
async def deployment_start(request: Request, tenant: AuthTenant) -> JSONResponse:
    return _changed(request, tenant, "start", "running")


@router.post("/v1/deployment/stop", **_DEPLOYMENT_CHANGE)
async def deployment_stop(request: Request, tenant: AuthTenant) -> JSONResponse:
    return _changed(request, tenant, "stop", "stopped")


# -- bookings -------------------------------------------------------------------------------------


@router.post(
    "/v1/deployment/bookings",
    status_code=201,
    response_model=None,
    responses=answers(Booking, statuses=(201,)),
    openapi_extra=documented_body(BookingCreateRequest),
)
async def create_booking(
    request: Request,
    tenant: AuthTenant,
    body: Annotated[BookingCreateRequest, json_body(BookingCreateRequest)],
) -> JSONResponse:
    state = server_state(request)
    start_at, end_at = _server_time(body.start_at, "start_at"), _server_time(body.end_at, "end_at")
    booking = await state.db.run(
        state.bookings.create, tenant.id, start_at=start_at, end_at=end_at, note=body.note
    )
    # Look at once: a booking that starts soon needs the model started now, not at the next sweep.
    state.deployments.sweep()
    return JSONResponse(state.bookings.to_json(booking), status_code=201)


@router.get("/v1/deployment/bookings", response_model=None, responses=answers(BookingList))
async def list_bookings(request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    bookings = await state.db.run(state.bookings.list_for, tenant.id)
    return {"object": "list", "data": [state.bookings.to_json(b) for b in bookings]}


@router.get(
    "/v1/deployment/bookings/{booking_id}", response_model=None, responses=answers(Booking, errors=(404,))
)
async def retrieve_booking(booking_id: BookingId, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    return state.bookings.to_json(await state.db.run(state.bookings.get, tenant.id, booking_id))


@router.delete(
    "/v1/deployment/bookings/{booking_id}", response_model=None, responses=answers(Booking, errors=(404,))
)
async def cancel_booking(booking_id: BookingId, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    return state.bookings.to_json(await state.db.run(state.bookings.cancel, tenant.id, booking_id))
