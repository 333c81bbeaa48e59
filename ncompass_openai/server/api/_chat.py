"""``POST /v1/chat/completions``: builds the answer, or the stream of ``chat.completion.chunk`` events.

The backend hands over text, typed tool-call deltas and finish reasons. A stream that holds its answer
(the local backend's tool format: the answer is parsed once whole) sends its deltas when the answer is
whole, in OpenAI's chunk shapes: each call's first delta carries its index, id, type and name, its
arguments follow in pieces.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from .._state import ServerState
from ..ledger._auth import Tenant
from ..protocol._schemas import ChatCompletionRequest
from ..protocol._tools import ToolCall
from ..runtime._events import GenerationEvent
from ._billing import Billing
from ._logprobs import chat_logprobs
from ._serving import Envelope, collect, start, stream_response, usage_tail

__all__ = ["assistant_message", "serve_chat"]


def assistant_message(content: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    """The assistant message of an answer: its text, or its calls (``content``: text beside them, or null)."""
    if not calls:
        return {"role": "assistant", "content": content}
    return {"role": "assistant", "content": content or None, "tool_calls": [call.message() for call in calls]}


async def serve_chat(
    request: Request, state: ServerState, tenant: Tenant, req: ChatCompletionRequest
) -> Response:
    """Answer one chat request (``n`` choices of one conversation)."""
    billing = Billing(state, tenant, "/v1/chat/completions")
    stream = await start(
        state, tenant, req.model, lambda: state.backend.prepare_chat(req), None if req.stream else request
    )
    env = Envelope("chatcmpl-", "chat.completion", "chat.completion.chunk", state.backend.model_id)

    if not req.stream:
        collected = await collect(request, state, tenant, billing, stream, req.n)
        if collected is None:
            return Response(status_code=499)  # nobody is listening; the status only shows in logs
        choices = [
            {
                "index": i,
                "message": assistant_message(text, collected.tool_calls[i]),
                "logprobs": chat_logprobs(collected.logprobs[i]) if req.logprobs else None,
                "finish_reason": collected.finish[i],
            }
            for i, text in enumerate(collected.texts)
        ]
        return env.response(choices, stream, collected.completion_tokens, billing)

    with_usage = req.include_usage()

    def delta(index: int, body: dict[str, Any], finish_reason: str | None, logprobs: Any = None) -> str:
        choice = {"index": index, "delta": body, "logprobs": logprobs, "finish_reason": finish_reason}
        return env.chunk(choice, with_usage=with_usage)

    def encode(event: GenerationEvent) -> str:
        index, text = event.index, event.text
        if event.tool_calls:
            return delta(index, {"tool_calls": [call.chunk() for call in event.tool_calls]}, None)
        logprobs = chat_logprobs([event.logprobs]) if event.logprobs is not None else None
        if event.finish_reason is None:  # no empty content deltas (held-back text), unless with logprobs
            return delta(index, {"content": text}, None, logprobs) if text or logprobs else ""
        end = delta(index, {}, event.finish_reason)
        return delta(index, {"content": text}, None, logprobs) + end if text or logprobs else end

    # A held answer's first delta has no content: its content, if any, comes whole at the end.
    opening = {"role": "assistant"} if stream.holds_answer else {"role": "assistant", "content": ""}
    head = [delta(i, opening, None) for i in range(req.n)]
    return await stream_response(billing, stream, head, encode, usage_tail(env, with_usage))
