"""``POST /v1/chat/completions``: renders the conversation, builds the answer or the chunk stream."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from ._auth import Tenant
from ._billing import Billing
from ._exceptions import ChatTemplateError, InvalidRequest, ModelUnavailableError
from ._schemas import ChatCompletionRequest
from ._serving import (
    Envelope,
    admit,
    collect,
    generate,
    not_running,
    sampling,
    stream_response,
    unknown_model,
)
from ._state import ServerState

__all__ = ["serve_chat"]

_DEFAULT_MAX_TOKENS = 4096  # the cap on "the room the context leaves" when a request sets no limit


def _prompt(state: ServerState, req: ChatCompletionRequest) -> str:
    try:
        return state.runtime.render_chat(
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
        raise InvalidRequest(
            f"Could not render {where}: {exc}", param=param, code="chat_template_error"
        ) from None


def _token_limit(state: ServerState, req: ChatCompletionRequest, prompt: str) -> int:
    limit = req.token_limit()
    if limit is not None:
        return limit
    # Like vLLM: no limit means the room the context leaves after the prompt (capped, so an engine with
    # a huge context cannot be asked for an endless answer by omission).
    used = state.runtime.count_tokens(prompt)
    return max(1, min(_DEFAULT_MAX_TOKENS, state.runtime.context_length - used))


async def serve_chat(
    request: Request, state: ServerState, tenant: Tenant, req: ChatCompletionRequest
) -> Response:
    """Answer one chat request (``n`` choices of one conversation)."""
    req.check()
    billing = Billing(state, tenant)
    if req.model != state.runtime.model_id:
        raise unknown_model(state, req.model)
    prompt = _prompt(state, req)
    await admit(state, tenant, req.model)
    try:
        limit = _token_limit(state, req, prompt)
    except ModelUnavailableError:
        raise not_running(state, tenant) from None
    stream = generate(state, tenant, [prompt], sampling(state, req, limit), req, "messages")
    env = Envelope("chatcmpl-", "chat.completion", "chat.completion.chunk", state.runtime.model_id)

    if not req.stream:
        collected = await collect(request, state, tenant, billing, stream, req.n)
        if collected is None:
            return Response(status_code=499)  # nobody is listening; the status only shows in logs
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": collected.finish[i],
            }
            for i, text in enumerate(collected.texts)
        ]
        return env.response(choices, stream.prompt_tokens, collected.completion_tokens, billing)

    with_usage = req.include_usage()

    def delta(index: int, body: dict[str, str], finish_reason: str | None) -> str:
        choice = {"index": index, "delta": body, "logprobs": None, "finish_reason": finish_reason}
        return env.chunk(choice, with_usage=with_usage)

    def encode(index: int, text: str, finish_reason: str | None) -> str:
        if finish_reason is None:
            return delta(index, {"content": text}, None)
        end = delta(index, {}, finish_reason)
        return delta(index, {"content": text}, None) + end if text else end

    head = [delta(i, {"role": "assistant", "content": ""}, None) for i in range(req.n)]
    return await stream_response(billing, stream, head, encode, env.usage_chunk if with_usage else None)
