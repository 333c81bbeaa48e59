"""OpenAI-shaped errors: every failure the server answers is ``{"error": {message, type, param, code}}``.

The shape matters because the openai client maps the status onto its own exception classes and shows
the message; the headers (``Retry-After``, ``x-should-retry``) drive its retry logic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._headers import MAX_IN_FLIGHT, RETRY_AFTER, SHOULD_RETRY
from .._exceptions import (
    ClientGone,
    InvalidRequest,
    ModelNotRunning,
    NotFound,
    QueueFullError,
    Unauthenticated,
    UpstreamError,
)
from ..protocol._validation import validation_message

__all__ = [
    "APIError",
    "CatchAllMiddleware",
    "answer_for",
    "bad_request",
    "error_body",
    "install_error_handlers",
    "model_not_running",
]

logger = logging.getLogger("ncompass_openai.server")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "model_not_running",
}


def error_body(
    message: str, type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class APIError(Exception):
    """An error answer: raised anywhere in a route, turned into an OpenAI-shaped JSON response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPE_BY_STATUS.get(status, "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def answer_for(exc: BaseException) -> APIError | None:
    """The protocol's answer to a domain error (``_exceptions.py``); ``None`` for anything else.

    The one place where what the server's parts raise becomes a status, a body and headers.
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, InvalidRequest):
        return APIError(400, exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, Unauthenticated):
        return APIError(401, exc.message, code=exc.code)
    if isinstance(exc, NotFound):
        return APIError(404, exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, ModelNotRunning):
        return model_not_running(exc.state, retry_after=exc.retry_after, error=exc.error)
    if isinstance(exc, UpstreamError):
        return _upstream_answer(exc)
    if isinstance(exc, QueueFullError):
        return APIError(
            429,
            f"{exc} Raise the limit with `ncompass serve --max-queue-per-key`.",
            code="rate_limit_exceeded",
            headers={RETRY_AFTER: str(exc.retry_after), MAX_IN_FLIGHT: str(exc.limit)},
        )
    return None


def _upstream_answer(exc: UpstreamError) -> APIError:
    """An upstream's refusal: the tenant's own mistakes stay 400, a busy upstream's 429/503 keep their
    ``Retry-After``, and everything else (unreachable, broken off, a 5xx, the gateway's key refused) is a
    502 ``upstream_error``: not the tenant's fault, and worth retrying."""
    status = exc.status
    headers = {RETRY_AFTER: exc.retry_after} if exc.retry_after else {}
    if status in (429, 503):
        kind = "rate_limit_error" if status == 429 else "server_error"
        return APIError(status, exc.message, type=kind, code="upstream_busy", headers=headers)
    if status is not None and 400 <= status < 500 and status not in (401, 403, 404):
        return APIError(400, exc.message, param=exc.param, code="upstream_refused")
    return APIError(502, exc.message, type="server_error", code="upstream_error")


def model_not_running(state: str, *, retry_after: float | None = None, error: str | None = None) -> APIError:
    """The protocol's 503: ``model_starting`` is worth retrying, ``model_stopped`` is not."""
    if state == "starting":
        seconds = max(1, min(120, math.ceil(retry_after or 1)))
        why = f": {error}" if error else " (cold start)"
        return APIError(
            503,
            f"The model is starting{why}; retry after the Retry-After delay, or wait with "
            "`client.deployment.wait_until_running()` / `ncompass model status`.",
            type="model_not_running",
            code="model_starting",
            headers={RETRY_AFTER: str(seconds), SHOULD_RETRY: "true"},
        )
    if state == "failed":
        why = f" Its last start failed: {(error or 'no reason given').rstrip().rstrip('.')}."
        advice = "Fix what that names (starting again fails the same way until then), then start it"
    else:
        why, advice = "", "Start it"
    return APIError(
        503,
        f"The model is not running (state: {state}).{why} {advice} with `POST /v1/deployment/start` "
        "(`client.deployment.start()`, `ncompass model start`) and wait until it is running.",
        type="model_not_running",
        code="model_stopped",
        headers={SHOULD_RETRY: "false"},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Every error path of the app answers in OpenAI's shape; nothing leaks a traceback."""

    async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
        answer = answer_for(exc)
        assert answer is not None  # registered for the classes answer_for maps
        return answer.response()

    for kind in (
        APIError,
        InvalidRequest,
        Unauthenticated,
        NotFound,
        ModelNotRunning,
        QueueFullError,
        UpstreamError,
    ):
        app.add_exception_handler(kind, _domain_error)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nobody is listening; the status only shows in logs

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return JSONResponse(error_body(message, "invalid_request_error", param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (
                f"Unknown route `{request.method} {request.url.path}`. The routes this server answers "
                "(e.g. `POST /v1/chat/completions`) are listed at `GET /openapi.json` and `GET /docs`."
            )
            code: str | None = "unknown_url"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on `{request.url.path}`."
            code = "method_not_allowed"
        else:
            message = str(exc.detail)
            code = None
        body = error_body(message, _TYPE_BY_STATUS.get(exc.status_code, "invalid_request_error"), code=code)
        return JSONResponse(body, status_code=exc.status_code, headers=dict(exc.headers or {}))


_INTERNAL = (
    "The server hit an internal error; it is still up. Retry the request, and report it if it happens again."
)


class CatchAllMiddleware:
    """Turns an unexpected exception into OpenAI's 500 and keeps the connection usable.

    Starlette's own last-resort handler re-raises after answering, which makes uvicorn drop the
    keep-alive connection; a client's next request on it would fail. This one answers and returns.

    Args:
        app: The wrapped ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            logger.exception("Unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # the status is out already; the client sees a cut response
            response = JSONResponse(error_body(_INTERNAL, "server_error"), status_code=500)
            await response(scope, receive, send)
