"""The gateway's Responses API: ``POST /v1/responses`` forwarded to the upstream's ``/responses``.

Only when the operator declares it (``--upstream-supports responses``: vLLM, SGLang, llama.cpp's
``llama-server`` and this project's server have the route; llama-cpp-python's server does not);
otherwise the route answers 400 naming the flag, before anything is sent. The request's features need
their own declarations as on the chat route (function ``tools`` need ``tools``, a JSON ``text.format``
needs ``response_format``, and its answers are still checked against the schema here).

This server keeps the conversations, not the upstream: each request goes up whole (the stored
conversation of ``previous_response_id`` and the new input, as input items) with ``store: false``, so
any replica can answer it and no tenant can read another's through the upstream. The upstream's event
stream is read back into the stream's events (:class:`ResponseEvents`), and ``api/_responses.py``
builds the answer, its events and the stored response as for every backend.
"""

from __future__ import annotations

from typing import Any

from ..._exceptions import InvalidRequest, UpstreamError
from ...protocol._responses import ResponseRequest, to_chat_request, to_items
from ...protocol._schemas import ChatCompletionRequest
from ...protocol._tools import ToolCallDelta
from ._bodies import refuse_undeclared
from ._reading import Reading, usage_of

__all__ = ["ResponseEvents", "response_body"]

# Fields of ours that are not sent up: the conversation goes whole, and is stored here.
_KEPT_HERE = ("previous_response_id", "metadata", "store")


def _refused() -> InvalidRequest:
    return InvalidRequest(
        "The Responses API is forwarded only to upstreams declared to serve it: declare it with "
        "`--upstream-supports responses` if they do (vLLM, SGLang, llama-server and ncompass serve have "
        "`/v1/responses`), or use /v1/chat/completions.",
        code="unsupported_by_upstream",
    )


def response_body(
    req: ResponseRequest, conversation: list[dict[str, Any]], supports: frozenset[str], model: str
) -> tuple[dict[str, Any], ChatCompletionRequest]:
    """The body of ``req`` for the upstream's ``/responses``, and the chat request its checks come from.

    Raises the 400 of an undeclared feature (the Responses API itself, or one the request uses).
    """
    if "responses" not in supports:
        raise _refused()
    chat = to_chat_request(req, conversation)  # the same checks, and feature refusals, as the chat route
    refuse_undeclared(chat, supports)
    body = req.model_dump(mode="json", exclude_unset=True, by_alias=True)
    for name in _KEPT_HERE:
        body.pop(name, None)
    body.update(model=model, input=to_items(conversation), stream=True, store=False)
    return body, chat


class ResponseEvents:
    """An upstream's Responses API event stream read into the runtime's events (one choice).

    Text deltas become text; each ``function_call`` item becomes a tool call in chat's delta shape (its
    number, id and name, then its arguments in pieces); ``response.completed`` / ``response.incomplete``
    carry the usage and end the answer (``length`` when it hit ``max_output_tokens``).
    """

    def __init__(self) -> None:
        self._calls: dict[int, int] = {}  # output_index -> call number
        self._argued: set[int] = set()  # calls whose arguments came in pieces

    def feed(self, event: dict[str, Any], read: Reading) -> bool:
        """One upstream event into ``read``; True when the answer is complete."""
        kind = event.get("type")
        if kind == "response.output_text.delta":
            read.add(0, str(event.get("delta") or ""), None, [], ())
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                if not read.tools:
                    raise UpstreamError(
                        "The upstream answered with a function call, which was not asked for."
                    )
                number = self._calls.setdefault(int(event.get("output_index") or 0), len(self._calls))
                head = ToolCallDelta(number, str(item.get("call_id") or ""), str(item.get("name") or ""))
                read.add(0, "", None, [], (head,))
        elif kind in ("response.function_call_arguments.delta", "response.function_call_arguments.done"):
            call = self._calls.get(int(event.get("output_index") or 0))
            if call is None:
                raise UpstreamError("The upstream sent the arguments of a function call it never began.")
            done = kind.endswith(".done")
            if done and call in self._argued:
                return False  # its pieces came already
            piece = str(event.get("arguments" if done else "delta") or "")
            self._argued.add(call)
            read.add(0, "", None, [], (ToolCallDelta(call, arguments=piece),))
        elif kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            read.usage(usage_of(response.get("usage"), prefix="input", completion="output"))
            reason = (response.get("incomplete_details") or {}).get("reason")
            if kind == "response.incomplete" and reason != "max_output_tokens":
                raise UpstreamError(f"The upstream left the response incomplete ({reason}).")
            finish = "length" if kind == "response.incomplete" else "tool_calls" if self._calls else "stop"
            read.add(0, "", finish, [], ())
            return True
        elif kind in ("response.failed", "error"):
            error = (event.get("response") or {}).get("error") or event
            raise UpstreamError(f"The upstream failed mid-stream: {error.get('message') or kind}")
        return False
