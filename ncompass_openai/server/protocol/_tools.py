"""Function tools in OpenAI's terms: a tool's spec, a call, and a streamed call's pieces.

Whatever writes the calls (the local backend's tool format, an upstream's answer), serving receives them
as :class:`ToolCallDelta` items on the stream's events and builds answers from :class:`ToolCall`:

- a call's first delta carries its ``index``, ``id`` and ``name`` (``arguments`` empty or a first piece);
- the deltas after it carry only the ``index`` and a piece of ``arguments``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._exceptions import InvalidRequest

__all__ = [
    "FunctionSpec",
    "ToolCall",
    "ToolCallDelta",
    "argument_pieces",
    "call_deltas",
    "check_tool_names",
    "merge_tool_calls",
]

_ARGUMENT_PIECE = 16  # characters of a call's arguments per streamed delta


@dataclass(frozen=True)
class FunctionSpec:
    """One function tool: its name, description and JSON-schema ``parameters``."""

    name: str
    description: str | None
    parameters: dict[str, Any] | None


@dataclass(frozen=True)
class ToolCall:
    """One whole call: ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str

    def message(self) -> dict[str, Any]:
        """The call as an assistant message's ``tool_calls`` item."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of call number ``index`` of one choice, in OpenAI's streamed shape."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def chunk(self) -> dict[str, Any]:
        """The delta as a chat chunk's ``tool_calls`` item."""
        function: dict[str, Any] = {"arguments": self.arguments}
        if self.id is None and self.name is None:
            return {"index": self.index, "function": function}
        head = {"index": self.index, "id": self.id or "", "type": "function"}
        return {**head, "function": {"name": self.name or "", **function}}


def argument_pieces(arguments: str) -> list[str]:
    """A call's arguments in the pieces a stream sends them in (the answer is whole by then)."""
    return [arguments[k : k + _ARGUMENT_PIECE] for k in range(0, len(arguments), _ARGUMENT_PIECE)]


def call_deltas(index: int, call: ToolCall) -> list[ToolCallDelta]:
    """A whole call as a stream sends it: its head, then its arguments in pieces."""
    return [
        ToolCallDelta(index, call.id, call.name),
        *(ToolCallDelta(index, arguments=piece) for piece in argument_pieces(call.arguments)),
    ]


def merge_tool_calls(calls: list[ToolCall], deltas: Iterable[ToolCallDelta]) -> None:
    """Add streamed ``deltas`` to the whole ``calls`` (by their ``index``; arguments appended).

    OpenAI's stream names a call in its first delta only; some servers (llama-cpp-python's) repeat the
    whole name in every delta, which is taken as the same name, not appended to it.
    """
    for delta in deltas:
        while len(calls) <= delta.index:
            calls.append(ToolCall("", "", ""))
        call = calls[delta.index]
        name = call.name if delta.name in (None, "", call.name) else call.name + delta.name
        calls[delta.index] = ToolCall(delta.id or call.id, name, call.arguments + delta.arguments)


def check_tool_names(specs: Sequence[FunctionSpec], choice: str | None, param: str = "tool_choice") -> None:
    """Duplicate names, or a ``tool_choice`` naming a tool that is not there: 400 naming the field."""
    names = [spec.name for spec in specs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(f"Two tools are named `{name}`: tool names must be unique.", param="tools")
    if choice in (None, "none"):
        return
    if not specs:
        raise InvalidRequest(f"`{param}` is `{choice}` but the request has no `tools`.", param=param)
    if choice not in ("auto", "required") and choice not in names:
        raise InvalidRequest(
            f"`{param}` names the function `{choice}`, which is not one of `tools` ({', '.join(names)}).",
            param=param,
        )
