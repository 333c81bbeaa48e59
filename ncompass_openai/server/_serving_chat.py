"""``POST /v1/chat/completions``: renders the conversation, builds the answer or the chunk stream.

With tools in play (``_tools.py``) the model's answer is one JSON object, enforced by a grammar: it is
parsed into ``content`` or ``tool_calls`` once complete, so a streamed answer with tools sends its deltas
when the answer is whole (in OpenAI's chunk shapes: each call's first delta carries its index, id, type and
name, its arguments follow in pieces).
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import Response

from ._auth import Tenant
from ._billing import Billing
from ._exceptions import ChatTemplateError, InvalidRequest, ModelUnavailableError
from ._forward import forward
from ._grammar import format_grammar
from ._logprobs import chat_logprobs
from ._runtime import GenerationEvent, GenerationStream
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
    usage_tail,
)
from ._state import ServerState
from ._tools import ToolCall, ToolPlan, argument_pieces, parse_answer, plan_tools, render_history

__all__ = ["answer_of", "assistant_message", "serve_chat", "start_chat"]

_DEFAULT_MAX_TOKENS = 4096  # the cap on "the room the context leaves" when a request sets no limit


def _prompt(state: ServerState, req: ChatCompletionRequest, plan: ToolPlan | None) -> str:
    try:
        return state.engine_runtime.render_chat(
            render_history(req.message_dicts(), plan.instruction if plan is not None else None),
            add_generation_prompt=req.add_generation_prompt,
            continue_final_message=req.continue_final_message,
            chat_template=req.chat_template,
            chat_template_kwargs=req.chat_template_kwargs,
            tools=[tool.model_dump(exclude_none=True) for tool in req.tools or []] or None,
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
    runtime = state.engine_runtime
    used = runtime.count_tokens(prompt)
    return max(1, min(_DEFAULT_MAX_TOKENS, runtime.context_length - used))


def _constraints(state: ServerState, req: ChatCompletionRequest) -> tuple[str | None, ToolPlan | None]:
    """The grammar of the answer, and the tool plan when tools are in play (mutually exclusive)."""
    plan = plan_tools(
        state.engine_runtime,
        req.function_specs(),
        req.tool_choice_name(),
        req.parallel_tool_calls is not False,
    )
    if plan is not None:
        return plan.grammar, plan
    fmt = req.response_format
    if fmt is None:
        return None, None
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    param = "response_format.json_schema" if fmt.type == "json_schema" else "response_format"
    return format_grammar(state.engine_runtime, fmt.type, schema, param), None


def answer_of(
    text: str, plan: ToolPlan | None, finish: str | None
) -> tuple[str | None, list[ToolCall], str | None]:
    """One choice's ``(content, tool_calls, finish_reason)``; ``tool_calls`` is the reason when it called."""
    if plan is None:
        return text, [], finish
    content, calls = parse_answer(text)
    return content, calls, "tool_calls" if calls else finish


def assistant_message(content: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    """The assistant message of an answer: its text, or its calls with ``content: null``."""
    if not calls:
        return {"role": "assistant", "content": content}
    tool_calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


def _call_deltas(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """OpenAI's streamed shape of tool calls: a head delta per call, then its arguments in pieces."""
    deltas: list[dict[str, Any]] = []
    for k, call in enumerate(calls):
        head = {
            "index": k,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        for piece in argument_pieces(call.arguments):
            deltas.append({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
    return deltas


async def start_chat(
    state: ServerState, tenant: Tenant, req: ChatCompletionRequest
) -> tuple[GenerationStream, ToolPlan | None]:
    """Check, constrain, render and queue one conversation; the Responses API starts its own through here."""
    req.check()
    if req.model != state.runtime.model_id:
        raise unknown_model(state, req.model)
    if state.forwards:
        return await forward(state, tenant, req, req.n), None
    grammar, plan = await anyio.to_thread.run_sync(_constraints, state, req)  # a new schema may take a while
    prompt = _prompt(state, req, plan)
    await admit(state, tenant, req.model)
    try:
        limit = _token_limit(state, req, prompt)
    except ModelUnavailableError:
        raise not_running(state, tenant) from None
    return generate(state, tenant, [prompt], sampling(state, req, limit, grammar), req, "messages"), plan


async def serve_chat(
    request: Request, state: ServerState, tenant: Tenant, req: ChatCompletionRequest
) -> Response:
    """Answer one chat request (``n`` choices of one conversation)."""
    billing = Billing(state, tenant, "/v1/chat/completions")
    stream, plan = await start_chat(state, tenant, req)
    env = Envelope("chatcmpl-", "chat.completion", "chat.completion.chunk", state.runtime.model_id)

    if not req.stream:
        collected = await collect(request, state, tenant, billing, stream, req.n)
        if collected is None:
            return Response(status_code=499)  # nobody is listening; the status only shows in logs
        choices = []
        for i, text in enumerate(collected.texts):
            content, calls, finish = answer_of(text, plan, collected.finish[i])
            logprobs = chat_logprobs(collected.logprobs[i]) if req.logprobs else None
            message = assistant_message(content, calls)
            if collected.tool_calls[i]:  # an upstream's calls (the openai engine)
                message = {
                    "role": "assistant",
                    "content": content or None,
                    "tool_calls": collected.tool_calls[i],
                }
            choices.append(
                {
                    "index": i,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            )
        return env.response(choices, stream, collected.completion_tokens, billing)

    with_usage = req.include_usage()

    def delta(index: int, body: dict[str, Any], finish_reason: str | None, logprobs: Any = None) -> str:
        choice = {"index": index, "delta": body, "logprobs": logprobs, "finish_reason": finish_reason}
        return env.chunk(choice, with_usage=with_usage)

    if plan is None:

        def encode(event: GenerationEvent) -> str:
            index, text = event.index, event.text
            if event.tool_calls:  # an upstream's tool-call piece (the openai engine), passed on
                return delta(index, {"tool_calls": list(event.tool_calls)}, None)
            logprobs = chat_logprobs([event.logprobs]) if event.logprobs is not None else None
            if event.finish_reason is None:  # no empty content deltas (held-back text), unless with logprobs
                return delta(index, {"content": text}, None, logprobs) if text or logprobs else ""
            end = delta(index, {}, event.finish_reason)
            return delta(index, {"content": text}, None, logprobs) + end if text or logprobs else end

        head = [delta(i, {"role": "assistant", "content": ""}, None) for i in range(req.n)]
    else:
        held: dict[int, list[str]] = {}

        def encode(event: GenerationEvent) -> str:
            index = event.index
            held.setdefault(index, []).append(event.text)  # the answer is parsed once whole
            if event.finish_reason is None:
                return ""
            content, calls, finish = answer_of("".join(held.pop(index)), plan, event.finish_reason)
            bodies = _call_deltas(calls) if calls else [{"content": content}] if content else []
            return "".join(delta(index, body, None) for body in bodies) + delta(index, {}, finish)

        head = [delta(i, {"role": "assistant"}, None) for i in range(req.n)]
    return await stream_response(billing, stream, head, encode, usage_tail(env, with_usage))
