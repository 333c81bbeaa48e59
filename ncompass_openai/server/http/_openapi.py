"""The server's OpenAPI schema (``GET /openapi.json``) and its interactive page (``GET /docs``).

The routes parse their bodies themselves (strict types, OpenAI-shaped 400s naming the field), so the
schema is declared beside each route from the same models: :func:`json_body` names the request model
a route validates with, :func:`answers` the typed results it returns and the errors it can answer.
:func:`install_openapi` adds the request models and the error shape to the schema's components.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

__all__ = [
    "NO_BODY",
    "ErrorResponse",
    "answers",
    "install_openapi",
    "json_body",
    "query_parameters",
]

_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error answer: OpenAI's shape."""

    error: ErrorDetail


_ERROR_WHEN = {
    400: "A field is missing, of the wrong type, out of range, or fields conflict (`param` names it).",
    401: "No key, or an unknown key (`invalid_api_key`).",
    404: "Unknown route, model or id, or another tenant's id.",
    413: "The body is over the server's limit (`request_too_large`).",
    429: "Too many requests in flight for this key; retry after `Retry-After`.",
    503: "The model is not running: `model_starting` (retry after `Retry-After`) or `model_stopped`.",
}
# Every authenticated route can answer these; a route adds its own (404, 429, 503) with ``errors=``.
_COMMON_ERRORS = (400, 401, 413)

# ``openapi_extra`` of a POST that takes no body: said in the schema, so a test can tell it from a
# route whose body was forgotten.
NO_BODY: dict[str, Any] = {"x-request-body": "none"}


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body ``model`` validates."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
        }
    }


def query_parameters(*params: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``(name, schema, description)`` query parameters."""
    return {
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
            for name, schema, text in params
        ]
    }


# OpenAPI 3.1 without `itemSchema`: the schema of one event (its `data` is a chunk's JSON, or `[DONE]`).
_SSE_EVENT = {
    "type": "object",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
    "required": ["data"],
}


def answers(
    model: type[BaseModel],
    *,
    statuses: Iterable[int] = (200,),
    stream: bool = False,
    errors: Sequence[int] = (),
    headers: Mapping[str, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: its result model (and ``headers``: name → description) under each
    success status, then its errors."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": model, "description": f"`{model.__name__}`"}
        if stream:
            entry["description"] += "; with `stream: true`, Server-Sent Events ending in `data: [DONE]`"
            entry["content"] = {"text/event-stream": {"schema": _SSE_EVENT}}
        if headers:
            entry["headers"] = {
                name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
            }
        out[status] = entry
    for status in sorted({*_COMMON_ERRORS, *errors}):
        out[status] = {"model": ErrorResponse, "description": _ERROR_WHEN[status]}
    return out


def install_openapi(app: FastAPI, request_models: Iterable[type[BaseModel]]) -> None:
    """Serve ``/openapi.json`` and ``/docs`` (no key needed) with the request models in components."""
    models = list(request_models)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _, defs = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            # FastAPI documents a 422 for routes with parameters; this server answers 400 instead.
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    async def openapi_json() -> JSONResponse:
        return JSONResponse(openapi())

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API")

    app.add_api_route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
