"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``: OpenAI's Responses API.

The backend prepares a response as it does a chat (the local backend decodes it through the chat path,
``protocol/_responses.py`` translating the request; the gateway forwards it to the upstream's own route),
and its text and function calls come back as the same typed events. The answer
is a ``response`` object whose ``output`` holds one ``message`` item (``output_text``) or the
``function_call`` items; streamed, it is OpenAI's event sequence, each event with its
``sequence_number``::

    response.created, response.in_progress,
    response.output_item.added, response.content_part.added, response.output_text.delta ...,
    response.output_text.done, response.content_part.done, response.output_item.done,     (a message)
    response.output_item.added, response.function_call_arguments.delta ...,
    response.function_call_arguments.done, response.output_item.done,                    (each call)
    response.completed (with usage)

With ``store`` (the default) the response and its conversation are kept in the ledger for the tenant:
``previous_response_id`` continues that conversation; another tenant's id is a 404.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .._exceptions import InvalidRequest, NotFound
from .._state import ServerState
from ..ledger._auth import Tenant
from ..protocol._responses import FunctionChoice, ResponseRequest, rename_fields, rename_param, to_messages
from ..protocol._tools import ToolCall, argument_pieces, merge_tool_calls
from ..runtime._bridge import GenerationStream
from ..runtime._events import GenerationEvent
from ._billing import Billing
from ._chat import assistant_message
from ._serving import collect, start, stream_response
from ._sse import event

__all__ = ["delete_response", "get_response", "serve_response"]


def _not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(
        f"No response with id `{response_id}` is stored for this API key (responses created with "
        "`store: false` are not kept).",
        param=param,
        code="response_not_found",
    )


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _answer(text: str, calls: list[ToolCall], finish: str | None) -> tuple[str | None, str | None]:
    """``(content, finish_reason)`` of the answer: ``tool_calls`` is the reason when it called, unless the
    token limit cut its list (``length``)."""
    if calls:
        return text or None, "length" if finish == "length" else "tool_calls"
    return text, finish


async def _start(
    state: ServerState, tenant: Tenant, req: ResponseRequest, conversation: list[dict[str, Any]]
) -> GenerationStream:
    """The stream; a refusal names the Responses field (``max_output_tokens``, not ``max_tokens``)."""
    try:
        return await start(
            state, tenant, req.model, lambda: state.backend.prepare_response(req, conversation)
        )
    except InvalidRequest as exc:
        message, param = rename_fields(exc.message), rename_param(exc.param)
        raise InvalidRequest(message, param=param, code=exc.code) from None


def _call_item(call: ToolCall, status: str = "completed", arguments: str | None = None) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_" + call.id.removeprefix("call_"),
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": status,
    }


class _Response:
    """One response being answered: its fixed fields, its output, and the conversation it ends."""

    def __init__(self, state: ServerState, req: ResponseRequest, conversation: list[dict[str, Any]]) -> None:
        self.req = req
        self.conversation = conversation
        self.id = "resp_" + secrets.token_hex(16)
        self.message_id = "msg_" + secrets.token_hex(16)
        tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
        choice: Any = req.tool_choice
        if isinstance(choice, FunctionChoice):
            choice = choice.model_dump()
        text = req.text.model_dump(by_alias=True, exclude_none=True) if req.text is not None else None
        self.fields: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": time.time(),
            "model": state.backend.model_id,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "tools": tools,
            "tool_choice": choice if choice is not None else "auto",
            "parallel_tool_calls": (
                req.parallel_tool_calls
                if req.parallel_tool_calls is not None
                else state.backend.parallel_tool_calls_default()
            ),
            "previous_response_id": req.previous_response_id,
            "text": text or {"format": {"type": "text"}},
            "metadata": req.metadata or {},
            "store": req.store,
            "truncation": "disabled",
            "error": None,
            "incomplete_details": None,
            "user": req.user,
        }

    def body(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        body = {**self.fields, "status": status, "output": output, "usage": usage}
        if status == "incomplete":
            body["incomplete_details"] = {"reason": "max_output_tokens"}
        return body

    async def finish(
        self,
        state: ServerState,
        tenant: Tenant,
        answer: tuple[str | None, list[ToolCall]],
        status: str,
        usage: dict[str, Any],
    ) -> dict[str, Any]:
        """The final response object of ``(content, calls)``, stored when ``store`` is on.

        The stored conversation continues with the answer as the chat path writes it.
        """
        content, calls = answer
        output = [_call_item(c) for c in calls] or [_message_item(self.message_id, content or "", status)]
        body = self.body(status, output, usage)
        if self.req.store:
            turn = assistant_message(content, calls)
            await state.db.run(state.responses.save, tenant.id, body, [*self.conversation, turn])
        return body


async def serve_response(
    request: Request, state: ServerState, tenant: Tenant, req: ResponseRequest
) -> Response:
    """Answer one ``POST /v1/responses``."""
    billing = Billing(state, tenant, "/v1/responses")
    history: list[dict[str, Any]] = []
    if req.previous_response_id is not None:
        found = await state.db.run(state.responses.get, tenant.id, req.previous_response_id)
        if found is None:
            raise _not_found(req.previous_response_id, "previous_response_id")
        history = found[1]
    conversation = [*history, *to_messages(req.input_items())]
    stream = await _start(state, tenant, req, conversation)
    answer = _Response(state, req, conversation)

    if not req.stream:
        collected = await collect(request, state, tenant, billing, stream, 1)
        if collected is None:
            return Response(status_code=499)  # nobody is listening; the status only shows in logs
        calls = collected.tool_calls[0]
        content, finish = _answer(collected.texts[0], calls, collected.finish[0])
        status = "incomplete" if finish == "length" else "completed"
        usage = _usage(stream.prompt_tokens, collected.completion_tokens, stream.cached_tokens)
        body = await answer.finish(state, tenant, (content, calls), status, usage)
        return JSONResponse(body, headers=billing.headers())

    sequence = iter(range(1 << 62))

    def emit(kind: str, **payload: Any) -> str:
        return event({"type": kind, "sequence_number": next(sequence), **payload}, kind)

    in_progress = answer.body("in_progress", [], None)
    head = [
        emit("response.created", response=in_progress),
        emit("response.in_progress", response=in_progress),
    ]
    parts: list[str] = []
    calls_made: list[ToolCall] = []
    ended: dict[str, Any] = {}
    # The answer is sent whole at its end when it may be calls (or the backend holds it until then).
    whole = stream.holds_answer or stream.may_call

    def open_message() -> str:
        item = _message_item(answer.message_id, "", "in_progress")
        item["content"] = []
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return emit("response.output_item.added", output_index=0, item=item) + emit(
            "response.content_part.added",
            item_id=answer.message_id,
            output_index=0,
            content_index=0,
            part=part,
        )

    if not whole:  # plain text streams as it is generated
        head.append(open_message())

    def delta(text: str) -> str:
        ids = {"item_id": answer.message_id, "output_index": 0, "content_index": 0}
        return emit("response.output_text.delta", **ids, delta=text, logprobs=[])

    def encode(ev: GenerationEvent) -> str:
        parts.append(ev.text)
        if ev.tool_calls:
            merge_tool_calls(calls_made, ev.tool_calls)
        if ev.finish_reason is not None:
            ended["finish"] = ev.finish_reason
        if not whole:
            return delta(ev.text) if ev.text else ""
        return ""

    async def tail(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> str:
        calls = calls_made
        content, finish = _answer("".join(parts), calls, ended.get("finish"))
        status = "incomplete" if finish == "length" else "completed"
        events: list[str] = []
        if calls:
            for k, call in enumerate(calls):
                item = _call_item(call, "in_progress", "")
                events.append(emit("response.output_item.added", output_index=k, item=item))
                for piece in argument_pieces(call.arguments):
                    events.append(
                        emit(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=k,
                            delta=piece,
                        )
                    )
                events.append(
                    emit(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=k,
                        name=call.name,
                        arguments=call.arguments,
                    )
                )
                events.append(emit("response.output_item.done", output_index=k, item=_call_item(call)))
        else:
            if whole:  # tools were offered, the model answered in text: it comes whole
                events.append(open_message())
                if content:
                    events.append(delta(content))
            done_text = content or ""
            ids = {"item_id": answer.message_id, "output_index": 0, "content_index": 0}
            part = {"type": "output_text", "text": done_text, "annotations": [], "logprobs": []}
            events.append(emit("response.output_text.done", **ids, text=done_text, logprobs=[]))
            events.append(emit("response.content_part.done", **ids, part=part))
            item = _message_item(answer.message_id, done_text, status)
            events.append(emit("response.output_item.done", output_index=0, item=item))
        usage = _usage(prompt_tokens, completion_tokens, cached_tokens)
        body = await answer.finish(state, tenant, (content, calls), status, usage)
        last = "response.incomplete" if status == "incomplete" else "response.completed"
        events.append(emit(last, response=body))
        return "".join(events)

    return await stream_response(billing, stream, head, encode, tail, done=False)


async def get_response(state: ServerState, tenant: Tenant, response_id: str) -> dict[str, Any]:
    """``GET /v1/responses/{id}``: a stored response of this tenant."""
    found = await state.db.run(state.responses.get, tenant.id, response_id)
    if found is None:
        raise _not_found(response_id)
    return found[0]


async def delete_response(state: ServerState, tenant: Tenant, response_id: str) -> dict[str, Any]:
    """``DELETE /v1/responses/{id}``: forget a stored response of this tenant."""
    if not await state.db.run(state.responses.delete, tenant.id, response_id):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}
