"""Everything a request needs, kept on ``app.state.server`` (never in module globals)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from ._auth import AUTHENTICATED, Tenant, TenantRegistry
from ._bookings import BookingStore
from ._db import Database
from ._deployment import DeploymentManager
from ._errors import APIError, bad_request, validation_message
from ._response_store import ResponseStore
from ._runtime import InferenceRuntime, Runtime
from ._sessions import SessionStore
from ._settings import ServerSettings

if TYPE_CHECKING:
    from ._metrics import ServerMetrics

__all__ = ["AuthTenant", "ServerState", "authenticate", "json_body", "parse_body", "server_state"]

M = TypeVar("M", bound=BaseModel)


@dataclass
class ServerState:
    settings: ServerSettings
    db: Database
    tenants: TenantRegistry
    sessions: SessionStore
    bookings: BookingStore
    deployments: DeploymentManager
    runtime: Runtime
    responses: ResponseStore
    created: int
    metrics: ServerMetrics | None = None  # ``--metrics``: the counters of GET /metrics
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def forwards(self) -> bool:
        """Whether requests go upstream whole (the openai engine) instead of to an engine here."""
        return not isinstance(self.runtime, InferenceRuntime)

    @property
    def engine_runtime(self) -> InferenceRuntime:
        """The runtime of an engine that runs here (the token-level paths); not the openai engine's."""
        runtime = self.runtime
        if not isinstance(runtime, InferenceRuntime):
            raise TypeError(
                f"The {runtime.engine_name} engine forwards whole requests; it has no local engine."
            )
        return runtime


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


async def authenticate(request: Request) -> Tenant:
    """The FastAPI dependency of every protected route: checks the key and renews the session lease.

    Async on purpose: a plain function would be run on a worker thread for every request.
    """
    state = server_state(request)
    # The idempotency middleware authenticated this request's key already (a POST with a key).
    tenant = request.scope.get("state", {}).get(AUTHENTICATED)
    if not isinstance(tenant, Tenant):
        tenant = state.tenants.authenticate(request.headers.get("authorization"))
    await state.db.run(state.sessions.touch, tenant.id)
    return tenant


# The parameter type of every protected route.
AuthTenant = Annotated[Tenant, Depends(authenticate)]


async def parse_body(request: Request, model: type[M], *, optional: bool = False) -> M:
    """Parse a JSON body into ``model``; every failure is a 400 naming the field (never a 422)."""
    raw = await request.body()
    if not raw.strip():
        if optional and not raw:  # no body at all: the defaults; blanks are a body, and not JSON
            return model()
        raise bad_request(
            "The request body is empty: send a JSON object with `Content-Type: application/json`."
        )
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(
            f"The request body is not valid JSON ({exc}). Send a JSON object with "
            "`Content-Type: application/json`."
        ) from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        # Strict: `"max_tokens": "5"` or `"stream": "yes"` is a wrong type, as in OpenAI's API.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise APIError(400, message, param=param) from None


def json_body(model: type[M], *, optional: bool = False) -> Any:
    """A route parameter's ``Depends``: the request body parsed into ``model`` as :func:`parse_body` does.

    The route then takes a typed body, while parsing keeps its policy: strict types, a 400 naming the
    field, and a JSON body read whatever its ``Content-Type`` (``curl -d`` sends a form type).
    """

    async def parse(request: Request) -> M:
        return await parse_body(request, model, optional=optional)

    return Depends(parse)
