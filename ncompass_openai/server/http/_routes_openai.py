"""The OpenAI surface's routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` and
``/v1/responses``.

Thin: each binds its typed request and hands it to its serving module, which builds the answer (JSON, or
Server-Sent Events) and raises domain errors that ``_errors.py`` turns into the protocol's answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion
from openai.types.responses import Response as ResponseObject
from pydantic import BaseModel

from ..._headers import MAX_IN_FLIGHT, SESSION, SESSION_OPENED
from .._state import ServerState
from ..api._chat import serve_chat
from ..api._completions import serve_completion
from ..api._responses import delete_response, get_response, serve_response
from ..api._serving import check_model
from ..protocol._responses import ResponseRequest
from ..protocol._schemas import ChatCompletionRequest, CompletionRequest
from ._dependencies import AuthTenant, json_body, server_state
from ._openapi import answers
from ._openapi import json_body as documented_body

__all__ = ["REQUEST_MODELS", "router"]

router = APIRouter()

_INFERENCE_ERRORS = (404, 429, 503)
# Documented, not enforced (as the session and booking ids): any other id is simply not found (404).
ResponseId = Annotated[
    str, Path(description="A response id.", json_schema_extra={"pattern": "^resp_[A-Za-z0-9]+$"})
]
REQUEST_MODELS = (CompletionRequest, ChatCompletionRequest, ResponseRequest)


class ModelList(BaseModel):
    """``GET /v1/models``: the key's model."""

    object: str = "list"
    data: list[Model]


class ResponseDeleted(BaseModel):
    """``DELETE /v1/responses/{id}``."""

    id: str
    object: str = "response"
    deleted: bool = True


def _model_card(state: ServerState) -> dict[str, Any]:
    return {"id": state.backend.model_id, "object": "model", "owned_by": "ncompass", "created": state.created}


@router.get("/v1/models", response_model=None, responses=answers(ModelList))
async def list_models(request: Request, tenant: AuthTenant) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(server_state(request))]}


@router.get("/v1/models/{model_id:path}", response_model=None, responses=answers(Model, errors=(404,)))
async def retrieve_model(model_id: str, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    check_model(state, model_id)
    return _model_card(state)


_BILLING_HEADERS = {
    SESSION: "The session this answer's time is billed to (an implicit one if none was active).",
    SESSION_OPENED: "`true` when this request opened that implicit session.",
    MAX_IN_FLIGHT: "Requests this key may have queued or running at once; one more answers 429.",
}


def _inference(
    path: str, answer: type[BaseModel], request_model: type[BaseModel]
) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
    """The decorator of an inference route: its typed answers, its errors, its documented body."""
    return router.post(
        path,
        response_model=None,
        responses=answers(answer, stream=True, errors=_INFERENCE_ERRORS, headers=_BILLING_HEADERS),
        openapi_extra=documented_body(request_model),
    )


@_inference("/v1/completions", Completion, CompletionRequest)
async def create_completion(
    request: Request, tenant: AuthTenant, req: Annotated[CompletionRequest, json_body(CompletionRequest)]
) -> Response:
    return await serve_completion(request, server_state(request), tenant, req)


@_inference("/v1/chat/completions", ChatCompletion, ChatCompletionRequest)
async def create_chat_completion(
    request: Request,
    tenant: AuthTenant,
    req: Annotated[ChatCompletionRequest, json_body(ChatCompletionRequest)],
) -> Response:
    return await serve_chat(request, server_state(request), tenant, req)


@_inference("/v1/responses", ResponseObject, ResponseRequest)
async def create_response(
    request: Request, tenant: AuthTenant, req: Annotated[ResponseRequest, json_body(ResponseRequest)]
) -> Response:
    return await serve_response(request, server_state(request), tenant, req)


@router.get(
    "/v1/responses/{response_id}", response_model=None, responses=answers(ResponseObject, errors=(404,))
)
async def retrieve_response(response_id: ResponseId, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    return await get_response(server_state(request), tenant, response_id)


@router.delete(
    "/v1/responses/{response_id}", response_model=None, responses=answers(ResponseDeleted, errors=(404,))
)
async def remove_response(response_id: ResponseId, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    return await delete_response(server_state(request), tenant, response_id)
