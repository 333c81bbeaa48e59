"""The FastAPI dependencies of the routes: the server's state, the tenant of the key, the typed body."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from .._state import ServerState
from ..api._errors import APIError, bad_request
from ..ledger._auth import AUTHENTICATED, Tenant
from ..protocol._validation import validation_message

__all__ = ["AuthTenant", "authenticate", "json_body", "parse_body", "server_state"]

M = TypeVar("M", bound=BaseModel)


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
