"""Function tools: the call format the model writes, the grammar that enforces it, and its parsing.

SmolLM2's chat template (like many small models') has no tool syntax of its own, so the server uses one
generic JSON format for every template, llama.cpp's "generic" tool format. A system message describes
the tools and the format; the model then writes exactly one JSON object, enforced by a grammar:

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, ...]}   a call (or several)
    {"response": "It is sunny."}                                                     a plain answer

``tool_choice`` picks the alternatives: ``auto`` both, ``required`` calls only, a named function that
one call only, ``none`` no grammar (and no tool description): plain text. With ``parallel_tool_calls:
false`` there is exactly one call, otherwise one to :data:`MAX_PARALLEL_CALLS`. Each call's
``arguments`` validate against that tool's ``parameters``. The answer carries OpenAI's
``message.tool_calls`` (``call_...`` ids, arguments as a JSON string) and ``finish_reason:
"tool_calls"``; a plain answer's text is its content, also when the token limit cut it (``length``).
Earlier turns are rendered back in the same format: an assistant message's ``tool_calls`` as its JSON,
a ``tool`` message's result as ``{"tool_result": ...}``.

(A grammar that let the plain answer be free text, ended by the model's own end token, was measured
too: SmolLM2 then never started a call, 0 of 40 prompts; with both alternatives in JSON it calls.)
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._exceptions import InvalidRequest
from ._grammar import json_schema_grammar, require_grammar_support

if TYPE_CHECKING:
    from ._runtime import InferenceRuntime

__all__ = [
    "FunctionSpec",
    "ToolCall",
    "ToolPlan",
    "argument_pieces",
    "check_tool_names",
    "merge_tool_calls",
    "parse_answer",
    "plan_tools",
    "render_history",
]

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
MAX_PARALLEL_CALLS = 4  # calls in one answer: a small model repeating calls stops here, not at max_tokens
_ARGUMENT_PIECE = 16  # characters of a call's arguments per streamed delta


@dataclass(frozen=True)
class FunctionSpec:
    """One function tool: its name, description and JSON-schema ``parameters``."""

    name: str
    description: str | None
    parameters: dict[str, Any] | None


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for generation: the grammar and the instruction that go with them."""

    grammar: str
    instruction: str


def _call_schema(spec: FunctionSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": spec.name}, "arguments": spec.parameters or _ANY_OBJECT},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _answer_schema(specs: Sequence[FunctionSpec], allow_text: bool, parallel: bool) -> dict[str, Any]:
    calls = [_call_schema(spec) for spec in specs]
    call: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    items = {"type": "array", "items": call, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS if parallel else 1}
    calling = {
        "type": "object",
        "properties": {"tool_calls": items},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    if not allow_text:
        return calling
    text = {
        "type": "object",
        "properties": {"response": {"type": "string", "minLength": 1}},
        "required": ["response"],
        "additionalProperties": False,
    }
    return {"anyOf": [calling, text]}


def _instruction(specs: Sequence[FunctionSpec], allow_text: bool) -> str:
    tools = [
        {
            "name": s.name,
            **({"description": s.description} if s.description else {}),
            "parameters": s.parameters or _ANY_OBJECT,
        }
        for s in specs
    ]
    lines = [
        "You can call these tools:",
        json.dumps(tools, ensure_ascii=False),
        'To call tools, answer with JSON: {"tool_calls": [{"name": "<tool name>", "arguments": {...}}]}',
    ]
    if allow_text:
        lines.append('To answer without a tool, answer with JSON: {"response": "<your answer>"}')
    return "\n".join(lines)


def plan_tools(
    runtime: InferenceRuntime,
    specs: Sequence[FunctionSpec],
    choice: str | None,
    parallel: bool,
) -> ToolPlan | None:
    """The grammar and instruction for ``tool_choice`` (``None``: no tools in play, plain text).

    ``choice`` is ``none``, ``auto``, ``required`` or a function's name (already checked against ``specs``).
    Raises :class:`InvalidRequest` naming ``tools`` when a tool's ``parameters`` cannot be enforced.
    """
    if not specs or choice == "none":
        return None
    require_grammar_support(runtime, "tools")
    for i, spec in enumerate(specs):
        if spec.parameters is not None:
            json_schema_grammar(spec.parameters, f"tools[{i}].function.parameters")
    chosen = list(specs)
    if choice not in ("auto", "required"):
        chosen = [spec for spec in specs if spec.name == choice]
    allow_text = choice == "auto"
    schema = _answer_schema(chosen, allow_text, parallel)
    return ToolPlan(json_schema_grammar(schema, "tools"), _instruction(chosen, allow_text))


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


_RESPONSE_HEAD = '{"response":"'


def parse_answer(text: str) -> tuple[str | None, list[ToolCall]]:
    """The model's JSON answer as ``(content, tool_calls)``.

    The grammar guarantees the format unless generation stopped early (a stop string, the token limit):
    a plain answer cut there is still its text so far; anything else cut is the raw text.
    """
    try:
        value = json.loads(text)
    except ValueError:
        if text.startswith(_RESPONSE_HEAD):
            return _cut_string(text[len(_RESPONSE_HEAD) :]), []
        return text, []
    if isinstance(value, dict) and isinstance(value.get("response"), str) and len(value) == 1:
        return value["response"], []
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list) and len(value) == 1:
        calls = [
            ToolCall(
                "call_" + secrets.token_hex(12),
                str(call.get("name")),
                json.dumps(call.get("arguments", {}), ensure_ascii=False),
            )
            for call in value["tool_calls"]
            if isinstance(call, dict)
        ]
        if calls:
            return None, calls
    return text, []


def _cut_string(body: str) -> str:
    """The text of a JSON string cut before its closing quote (an escape cut in half is dropped)."""
    for trim in range(min(len(body), 6) + 1):
        try:
            value = json.loads(f'"{body[: len(body) - trim]}"')
        except ValueError:
            continue
        return str(value)
    return body


def argument_pieces(arguments: str) -> list[str]:
    """A call's arguments in the pieces a stream sends them in (the answer is whole by then)."""
    return [arguments[k : k + _ARGUMENT_PIECE] for k in range(0, len(arguments), _ARGUMENT_PIECE)]


def render_history(messages: Sequence[Mapping[str, Any]], instruction: str | None) -> list[dict[str, Any]]:
    """Messages for the chat template: earlier tool calls and results in the generic format.

    ``instruction`` (the tools' description) goes into the system message, made first when there is none.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        item = dict(message)
        calls = item.get("tool_calls")
        if item.get("role") == "assistant" and calls:
            rendered = [
                {"name": call["function"]["name"], "arguments": _arguments(call["function"].get("arguments"))}
                for call in calls
                if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping)
            ]
            item["content"] = json.dumps({"tool_calls": rendered}, ensure_ascii=False)
        elif item.get("role") == "tool":
            result = {"tool_result": _text(item.get("content"))}
            if item.get("tool_call_id"):
                result["tool_call_id"] = item["tool_call_id"]
            item["content"] = json.dumps(result, ensure_ascii=False)
        out.append(item)
    if instruction is not None:
        if out and out[0].get("role") in ("system", "developer"):
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{instruction}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": instruction})
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):  # text parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content or "")


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments if arguments is not None else {}


def merge_tool_calls(calls: list[dict[str, Any]], deltas: tuple[dict[str, Any], ...]) -> None:
    """Add streamed tool-call ``deltas`` to the whole ``calls`` (by their ``index``; arguments appended)."""
    for delta in deltas:
        k = int(delta.get("index") or 0)
        while len(calls) <= k:
            calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        call, function = calls[k], delta.get("function") or {}
        call["id"] = delta.get("id") or call["id"]
        call["type"] = delta.get("type") or call["type"]
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""
