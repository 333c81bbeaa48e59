"""What the serving modules share: the one order of a request, the envelope, collecting, streaming.

Each API surface has its own serving module (``_completions.py``, ``_chat.py``, ``_responses.py``) that
builds its answers and chunks from the stream's typed events; the routes in ``http/_routes_openai.py``
only bind the request and call it. Every surface starts its answer the same way (:func:`start`):
the body was validated as it was parsed (cross-field checks included), then the model id is checked, the
backend prepares the request, the deployment admits it, and the backend starts it. The backend's errors
are domain errors (with the field they concern); ``_errors.py`` maps those to HTTP, also when they
happen after a stream has begun.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from .._exceptions import ClientGone, ModelNotRunning, ModelUnavailableError, NotFound
from .._state import ServerState
from ..backends import Start
from ..engines._base import TokenLogprobs
from ..ledger._auth import Tenant
from ..protocol._tools import ToolCall, merge_tool_calls
from ..runtime._bridge import GenerationStream
from ..runtime._events import GenerationEvent
from . import _sse
from ._billing import Billing
from ._errors import answer_for, error_body, model_not_running

__all__ = [
    "Collected",
    "Envelope",
    "check_model",
    "collect",
    "start",
    "stream_response",
    "unknown_model",
    "usage_tail",
]

logger = logging.getLogger("ncompass_openai.server")

ChunkEncoder = Callable[[GenerationEvent], str]
"""``encode(event)``: the SSE event(s) of one generation event."""


def unknown_model(state: ServerState, model: str) -> NotFound:
    return NotFound(
        f"The model `{model}` does not exist or you do not have access to it. This key's model is "
        f"`{state.backend.model_id}` (see `GET /v1/models`).",
        param="model",
        code="model_not_found",
    )


def check_model(state: ServerState, model: str) -> None:
    """The request names this server's model (checked once per request, before anything else)."""
    if not state.backend.accepts_model(model):
        raise unknown_model(state, model)


def not_running(state: ServerState, tenant: Tenant) -> ModelNotRunning:
    return ModelNotRunning(state.deployments.state(tenant.id))


async def start(
    state: ServerState,
    tenant: Tenant,
    model: str,
    prepare: Callable[[], Awaitable[Start]],
    request: Request | None = None,
) -> GenerationStream:
    """The one order of every inference request: model, the backend's checks, admission, the start.

    ``prepare``: the backend's ``prepare_*`` of the request. Admission (``require_running``, the request
    counted for the idle timer) happens once, after the backend's checks, so a request the backend
    refuses is a 400 whatever the deployment's state. Where the start itself may take long (a gateway's
    whole answer comes with its first byte), ``request`` is watched meanwhile: a client that hangs up
    cancels the start, and so the upstream's generation (:class:`ClientGone`).
    """
    check_model(state, model)
    begin = await prepare()
    state.deployments.require_running(tenant.id)
    now = state.deployments.note_request(tenant.id)
    await state.db.run(state.deployments.persist_request, tenant.id, now)
    try:
        if request is None or not state.backend.start_waits:
            return await begin(tenant.id)
        return await _unless_hung_up(request, begin(tenant.id))
    except ModelUnavailableError:
        raise not_running(state, tenant) from None


async def _unless_hung_up(request: Request, starting: Awaitable[GenerationStream]) -> GenerationStream:
    """``starting``'s stream, or :class:`ClientGone` (``starting`` cancelled) if the client hangs up first."""
    task = asyncio.ensure_future(starting)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        raise ClientGone
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # the connection's receive channel broke: nobody is left to answer either
        logger.debug("Receive failed while waiting for an answer", exc_info=True)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """OpenAI's usage; ``cached_tokens``: prompt tokens the engine reused from its prompt cache."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class Envelope:
    """What the answer and every chunk of one request share: ``id``, ``object``, ``created``, ``model``."""

    def __init__(self, id_prefix: str, obj: str, chunk_obj: str, model: str) -> None:
        self.fields: dict[str, Any] = {
            "id": id_prefix + secrets.token_hex(12),
            "object": obj,
            "created": int(time.time()),
            "model": model,
        }
        self.chunk_fields = {**self.fields, "object": chunk_obj}

    def response(
        self,
        choices: list[dict[str, Any]],
        stream: GenerationStream,
        completion_tokens: int,
        billing: Billing,
    ) -> JSONResponse:
        counts = usage(stream.prompt_tokens, completion_tokens, stream.cached_tokens)
        return JSONResponse({**self.fields, "choices": choices, "usage": counts}, headers=billing.headers())

    def chunk(self, choice: dict[str, Any], *, with_usage: bool) -> str:
        """One SSE event of one choice; ``usage: null`` when the request asked for a usage chunk."""
        chunk = {**self.chunk_fields, "choices": [choice]}
        if with_usage:
            chunk["usage"] = None
        return _sse.event(chunk)

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> str:
        counts = usage(prompt_tokens, completion_tokens, cached_tokens)
        return _sse.event({**self.chunk_fields, "choices": [], "usage": counts})


@dataclass(frozen=True)
class Collected:
    """A whole answer: each choice's text, finish reason and logprobs, and the completion tokens in all."""

    texts: list[str]
    finish: list[str | None]
    completion_tokens: int
    logprobs: list[list[TokenLogprobs]]
    tool_calls: list[list[ToolCall]]


async def _close(stream: GenerationStream) -> None:
    # Shielded: this runs while a cancelled stream unwinds, and must still free the queue place.
    with anyio.CancelScope(shield=True):
        await stream.aclose()


async def _hang_up_on_disconnect(request: Request, stream: GenerationStream) -> None:
    await _disconnected(request)
    stream.hang_up()


async def collect(
    request: Request,
    state: ServerState,
    tenant: Tenant,
    billing: Billing,
    stream: GenerationStream,
    total: int,
) -> Collected | None:
    """Gather a whole answer; ``None`` when the client hung up (its generation stopped at once).

    The hang-up watch is a plain task that ends the stream, not a cancel scope around the gathering:
    one task per request is the cheapest way to see a disconnect while nothing is being sent.
    """
    watch = asyncio.ensure_future(_hang_up_on_disconnect(request, stream))
    try:
        return await _gather(state, tenant, billing, stream, total)
    finally:
        watch.cancel()


async def _gather(
    state: ServerState, tenant: Tenant, billing: Billing, stream: GenerationStream, total: int
) -> Collected | None:
    parts: list[list[str]] = [[] for _ in range(total)]
    logprobs: list[list[TokenLogprobs]] = [[] for _ in range(total)]
    calls: list[list[ToolCall]] = [[] for _ in range(total)]
    finish: list[str | None] = [None] * total
    tokens = [0] * total
    answered = False
    try:
        async for event in stream:
            parts[event.index].append(event.text)
            if event.tool_calls:
                merge_tool_calls(calls[event.index], event.tool_calls)
            if event.logprobs is not None:
                logprobs[event.index].append(event.logprobs)
            tokens[event.index] = event.completion_tokens
            if event.finish_reason is not None:
                finish[event.index] = event.finish_reason
        answered = not stream.hung_up
    except ModelUnavailableError:
        raise not_running(state, tenant) from None
    finally:
        await _close(stream)
        with anyio.CancelScope(shield=True):  # usage is billed data: recorded even when cancelled
            if answered:
                await billing.open()
            await billing.record(stream.prompt_tokens, stream.completion_tokens(sum(tokens)))
    if not answered:
        return None
    return Collected(
        ["".join(p) for p in parts], finish, stream.completion_tokens(sum(tokens)), logprobs, calls
    )


def _error_event(exc: BaseException) -> str:
    """The one ``data: {"error": ...}`` event that ends a stream that failed after it had begun."""
    answer = answer_for(exc)
    if answer is not None:
        return _sse.event(answer.body())
    if isinstance(exc, ModelUnavailableError):
        body = model_not_running("stopped").body()
        body["error"]["message"] = f"{exc} The stream is incomplete; start the model and retry."
        return _sse.event(body)
    logger.exception("Generation failed mid-stream", exc_info=exc)
    return _sse.event(
        error_body(
            "The server hit an internal error while streaming; the answer is incomplete. Retry the request.",
            "server_error",
        )
    )


TailEncoder = Callable[[int, int, int], Awaitable[str]]
"""``await tail(prompt_tokens, completion_tokens, cached_tokens)``: the last event(s) of a stream that
ended well."""


async def stream_response(
    billing: Billing,
    stream: GenerationStream,
    head: list[str],
    encode: ChunkEncoder,
    tail: TailEncoder | None,
    *,
    done: bool = True,
) -> StreamingResponse:
    """The streamed answer: its status and headers go out now, so its session is opened now.

    ``done``: end with ``data: [DONE]`` (chat and completions do; the Responses API does not).
    """
    try:
        await billing.open()
    except BaseException:
        await _close(stream)
        raise
    return _sse.response(_stream_events(billing, stream, head, encode, tail, done), billing.headers())


def usage_tail(envelope: Envelope, with_usage: bool) -> TailEncoder | None:
    """The usage chunk of chat and completion streams that asked for it."""
    if not with_usage:
        return None

    async def tail(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> str:
        return envelope.usage_chunk(prompt_tokens, completion_tokens, cached_tokens)

    return tail


async def _stream_events(
    billing: Billing,
    stream: GenerationStream,
    head: list[str],
    encode: ChunkEncoder,
    tail: TailEncoder | None,
    done: bool,
) -> AsyncIterator[str]:
    """The SSE body: ``head`` events, one event per generation event, the tail, ``[DONE]``.

    An error after the first byte becomes one ``data: {"error": ...}`` event, then the stream ends.
    """
    completion_tokens: dict[int, int] = {}
    failed: BaseException | None = None
    try:
        for chunk in head:
            yield chunk
        async for event in stream:
            completion_tokens[event.index] = event.completion_tokens
            yield encode(event)
    except Exception as exc:
        failed = exc
    finally:
        await _close(stream)
        with anyio.CancelScope(shield=True):  # usage is billed data: recorded even when cancelled
            await billing.record(
                stream.prompt_tokens, stream.completion_tokens(sum(completion_tokens.values()))
            )
    if failed is not None:
        yield _error_event(failed)
        return
    if tail is not None:
        used = stream.completion_tokens(sum(completion_tokens.values()))
        yield await tail(stream.prompt_tokens, used, stream.cached_tokens)
    if done:
        yield _sse.DONE
