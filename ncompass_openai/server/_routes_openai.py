"""The OpenAI surface's routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Thin: each binds its typed request and hands it to its serving module, which builds the answer (JSON, or
Server-Sent Events) and raises domain errors that ``_errors.py`` turns into the protocol's answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from .._headers import SESSION, SESSION_OPENED
from ._openapi import answers
from ._openapi import json_body as documented_body
from ._schemas import ChatCompletionRequest, CompletionRequest
from ._serving import unknown_model
from ._serving_chat import serve_chat
from ._serving_completions import serve_completion
from ._state import AuthTenant, ServerState, json_body, server_state

__all__ = ["REQUEST_MODELS", "router"]

router = APIRouter()

_INFERENCE_ERRORS = (404, 429, 503)
REQUEST_MODELS = (CompletionRequest, ChatCompletionRequest)


class ModelList(BaseModel):
    """``GET /v1/models``: the key's model."""

    object: str = "list"
    data: list[Model]


def _model_card(state: ServerState) -> dict[str, Any]:
    return {"id": state.runtime.model_id, "object": "model", "owned_by": "ncompass", "created": state.created}


@router.get("/v1/models", response_model=None, responses=answers(ModelList))
async def list_models(request: Request, tenant: AuthTenant) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(server_state(request))]}


@router.get("/v1/models/{model_id:path}", response_model=None, responses=answers(Model, errors=(404,)))
async def retrieve_model(model_id: str, request: Request, tenant: AuthTenant) -> dict[str, Any]:
    state = server_state(request)
    if model_id != state.runtime.model_id:
        raise unknown_model(state, model_id)
    return _model_card(state)


_BILLING_HEADERS = {
    SESSION: "The session this answer's time is billed to (an implicit one if none was active).",
    SESSION_OPENED: "`true` when this request opened that implicit session.",
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
