"""The OpenAI surface: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (JSON and SSE)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from .._headers import RETRY_AFTER
from ._auth import Tenant
from ._errors import APIError, bad_request, model_not_running, not_found
from ._exceptions import ChatTemplateError, ContextLengthError, ModelUnavailableError, QueueFullError
from ._openapi import answers, json_body
from ._runtime import GenerationStream, SamplingParams
from ._schemas import ChatCompletionRequest, CompletionRequest
from ._state import AuthTenant, ServerState, parse_body, server_state

__all__ = ["REQUEST_MODELS", "router"]

logger = logging.getLogger("ncompass_openai.server")
router = APIRouter()

_DEFAULT_CHAT_MAX_TOKENS = 4096
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
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
        raise _unknown_model(state, model_id)
    return _model_card(state)


def _unknown_model(state: ServerState, model: str) -> APIError:
    return not_found(
        f"The model `{model}` does not exist or you do not have access to it. This key's model is "
        f"`{state.runtime.model_id}` (see `GET /v1/models`).",
        param="model",
        code="model_not_found",
    )


def _admit(state: ServerState, tenant: Tenant, model: str) -> None:
    """Checks shared by both inference routes, in the order a caller can act on them."""
    if model != state.runtime.model_id:
        raise _unknown_model(state, model)
    state.deployments.require_running(tenant.id)
    state.deployments.note_request(tenant.id)


def _params(req: CompletionRequest | ChatCompletionRequest, max_tokens: int) -> SamplingParams:
    top_k = req.top_k if req.top_k not in (None, 0) else -1
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=-1 if top_k is None else top_k,
        min_p=0.0 if req.min_p is None else req.min_p,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        seed=req.seed,
    )


def _generate(
    state: ServerState,
    tenant: Tenant,
    prompts: list[str],
    params: SamplingParams,
    n: int,
    stop: tuple[str, ...],
    prompt_param: str,
) -> GenerationStream:
    try:
        return state.runtime.generate(tenant.id, prompts, params, n=n, stop=stop)
    except QueueFullError as exc:
        raise APIError(
            429,
            f"{exc} Raise the limit with `ncompass serve --max-queue-per-key`.",
            code="rate_limit_exceeded",
            headers={RETRY_AFTER: str(exc.retry_after)},
        ) from None
    except ContextLengthError as exc:
        raise bad_request(str(exc), param=prompt_param, code="context_length_exceeded") from None
    except ModelUnavailableError:
        raise model_not_running(state.deployments.state(tenant.id)) from None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class _Envelope:
    """What the answer and every chunk of one request share: ``id``, ``object``, ``created``, ``model``."""

    def __init__(self, id_prefix: str, obj: str, chunk_obj: str, model: str) -> None:
        self.fields: dict[str, Any] = {
            "id": id_prefix + secrets.token_hex(12),
            "object": obj,
            "created": int(time.time()),
            "model": model,
        }
        self.chunk_fields = {**self.fields, "object": chunk_obj}

    def response(self, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int) -> Response:
        return JSONResponse(
            {**self.fields, "choices": choices, "usage": _usage(prompt_tokens, completion_tokens)}
        )

    def chunk_choice(self, include_usage: bool) -> Callable[[int, str, str | None], str]:
        """``choice(index, body, finish_reason)``: one SSE chunk of one choice (``body``: its own fields)."""
        # Built once: only the index, the body and the finish reason change between chunks.
        f = self.chunk_fields
        prefix = (
            f'data: {{"id":"{f["id"]}","object":"{f["object"]}","created":{f["created"]},'
            f'"model":{json.dumps(f["model"])},"choices":[{{"index":'
        )
        suffix = ',"usage":null}\n\n' if include_usage else "}\n\n"

        def choice(index: int, body: str, finish_reason: str | None) -> str:
            reason = "null" if finish_reason is None else f'"{finish_reason}"'
            return f'{prefix}{index},{body},"logprobs":null,"finish_reason":{reason}}}]{suffix}'

        return choice

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> str:
        chunk = {**self.chunk_fields, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}
        return f"data: {json.dumps(chunk)}\n\n"


async def _close(stream: GenerationStream) -> None:
    # Shielded: this runs while a cancelled stream unwinds, and must still free the queue place.
    with anyio.CancelScope(shield=True):
        await stream.aclose()


async def _collect(
    request: Request, state: ServerState, tenant: Tenant, stream: GenerationStream, total: int
) -> tuple[list[str], list[str | None], int] | None:
    """Gather a whole answer; ``None`` when the client hung up (its generation stopped at once)."""
    result: tuple[list[str], list[str | None], int] | None = None
    failure: Exception | None = None
    async with anyio.create_task_group() as group:

        async def watch_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch_disconnect)
        try:
            result = await _gather(state, tenant, stream, total)
        except Exception as exc:
            failure = exc  # raised below, outside the group, so it is not wrapped in an ExceptionGroup
        finally:
            group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


async def _gather(
    state: ServerState, tenant: Tenant, stream: GenerationStream, total: int
) -> tuple[list[str], list[str | None], int]:
    parts: list[list[str]] = [[] for _ in range(total)]
    finish: list[str | None] = [None] * total
    tokens = [0] * total
    try:
        async for event in stream:
            parts[event.index].append(event.text)
            tokens[event.index] = event.completion_tokens
            if event.finish_reason is not None:
                finish[event.index] = event.finish_reason
    except ModelUnavailableError:
        raise model_not_running(state.deployments.state(tenant.id)) from None
    finally:
        await _close(stream)
        state.sessions.record_usage(tenant.id, stream.prompt_tokens, sum(tokens))
    return ["".join(p) for p in parts], finish, sum(tokens)


def _error_event(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        body = exc.body()
    elif isinstance(exc, ModelUnavailableError):
        body = model_not_running("stopped").body()
        body["error"]["message"] = f"{exc} The stream is incomplete; start the model and retry."
    else:
        logger.exception("Generation failed mid-stream", exc_info=exc)
        body = {
            "error": {
                "message": "The server hit an internal error while streaming; the answer is incomplete. "
                "Retry the request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    return f"data: {json.dumps(body)}\n\n"


async def _sse(
    state: ServerState,
    tenant: Tenant,
    stream: GenerationStream,
    head: list[str],
    encode: Callable[[int, str, str | None], str],
    usage_chunk: Callable[[int, int], str] | None,
) -> AsyncIterator[str]:
    """The SSE body: ``head`` chunks, one chunk per event, the usage chunk, ``[DONE]``.

    An error after the first byte becomes one ``data: {"error": ...}`` event, then the stream ends.
    """
    completion_tokens: dict[int, int] = {}
    failed: BaseException | None = None
    try:
        for chunk in head:
            yield chunk
        async for event in stream:
            completion_tokens[event.index] = event.completion_tokens
            yield encode(event.index, event.text, event.finish_reason)
    except Exception as exc:
        failed = exc
    finally:
        await _close(stream)
        state.sessions.record_usage(tenant.id, stream.prompt_tokens, sum(completion_tokens.values()))
    if failed is not None:
        yield _error_event(failed)
        return
    if usage_chunk is not None:
        yield usage_chunk(stream.prompt_tokens, sum(completion_tokens.values()))
    yield "data: [DONE]\n\n"


def _sse_response(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers=_SSE_HEADERS)


# -- /v1/completions ------------------------------------------------------------------------------


@router.post(
    "/v1/completions",
    response_model=None,
    responses=answers(Completion, stream=True, errors=_INFERENCE_ERRORS),
    openapi_extra=json_body(CompletionRequest),
)
async def create_completion(request: Request, tenant: AuthTenant) -> Response:
    state = server_state(request)
    req = await parse_body(request, CompletionRequest)
    req.check()
    _admit(state, tenant, req.model)
    prompts = req.prompts()
    total = len(prompts) * req.n
    params = _params(req, req.max_tokens or 16)
    stream = _generate(state, tenant, prompts, params, req.n, req.stop_list(), "prompt")
    env = _Envelope("cmpl-", "text_completion", "text_completion", state.runtime.model_id)

    if not req.stream:
        collected = await _collect(request, state, tenant, stream, total)
        if collected is None:
            return Response(status_code=499)  # nobody is listening; the status only shows in logs
        texts, finish, completion_total = collected
        choices = []
        for i in range(total):
            text = prompts[i // req.n] + texts[i] if req.echo else texts[i]
            choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish[i]})
        return env.response(choices, stream.prompt_tokens, completion_total)

    include_usage = req.include_usage()
    choice = env.chunk_choice(include_usage)

    def encode(index: int, text: str, finish_reason: str | None) -> str:
        return choice(index, f'"text":{json.dumps(text)}', finish_reason)

    head = [encode(i, prompts[i // req.n], None) for i in range(total)] if req.echo else []
    return _sse_response(
        _sse(state, tenant, stream, head, encode, env.usage_chunk if include_usage else None)
    )


# -- /v1/chat/completions -------------------------------------------------------------------------


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses=answers(ChatCompletion, stream=True, errors=_INFERENCE_ERRORS),
    openapi_extra=json_body(ChatCompletionRequest),
)
async def create_chat_completion(request: Request, tenant: AuthTenant) -> Response:
    state = server_state(request)
    req = await parse_body(request, ChatCompletionRequest)
    req.check()
    if req.model != state.runtime.model_id:
        raise _unknown_model(state, req.model)
    try:
        prompt = state.runtime.render_chat(
            req.message_dicts(),
            add_generation_prompt=req.add_generation_prompt,
            continue_final_message=req.continue_final_message,
            chat_template=req.chat_template,
            chat_template_kwargs=req.chat_template_kwargs,
            tools=req.tools,
        )
    except ChatTemplateError as exc:
        if req.chat_template is not None:
            param, where = "chat_template", "the request's `chat_template`"
        else:
            param, where = "messages", "the model's chat template (field `messages`)"
        raise bad_request(
            f"Could not render {where}: {exc}", param=param, code="chat_template_error"
        ) from None
    _admit(state, tenant, req.model)
    limit = req.token_limit()
    if limit is None:
        # Like vLLM: no limit means the room the context leaves after the prompt (capped, so an engine
        # with a huge context cannot be asked for an endless answer by omission).
        try:
            used = state.runtime.count_tokens(prompt)
        except ModelUnavailableError:
            raise model_not_running(state.deployments.state(tenant.id)) from None
        limit = max(1, min(_DEFAULT_CHAT_MAX_TOKENS, state.runtime.context_length - used))
    stream = _generate(state, tenant, [prompt], _params(req, limit), req.n, req.stop_list(), "messages")
    env = _Envelope("chatcmpl-", "chat.completion", "chat.completion.chunk", state.runtime.model_id)
    total = req.n

    if not req.stream:
        collected = await _collect(request, state, tenant, stream, total)
        if collected is None:
            return Response(status_code=499)  # nobody is listening; the status only shows in logs
        texts, finish, completion_total = collected
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": texts[i]},
                "logprobs": None,
                "finish_reason": finish[i],
            }
            for i in range(total)
        ]
        return env.response(choices, stream.prompt_tokens, completion_total)

    include_usage = req.include_usage()
    choice = env.chunk_choice(include_usage)

    def delta(index: int, body: str, finish_reason: str | None) -> str:
        return choice(index, f'"delta":{body}', finish_reason)

    def encode(index: int, text: str, finish_reason: str | None) -> str:
        if finish_reason is None:
            return delta(index, f'{{"content":{json.dumps(text)}}}', None)
        end = delta(index, "{}", finish_reason)
        return delta(index, f'{{"content":{json.dumps(text)}}}', None) + end if text else end

    head = [delta(i, '{"role":"assistant","content":""}', None) for i in range(total)]
    return _sse_response(
        _sse(state, tenant, stream, head, encode, env.usage_chunk if include_usage else None)
    )
