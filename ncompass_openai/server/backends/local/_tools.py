"""Function tools: the call format the model writes, the grammar that enforces it, and its parsing.

SmolLM2's chat template (like many small models') has no tool syntax of its own, so the server uses one
generic JSON format for every template, llama.cpp's "generic" tool format. A system message describes
the tools and the format; the model then writes exactly one JSON object, enforced by a grammar:

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, ...]}   a call (or several)
    {"response": "It is sunny."}                                                     a plain answer

``tool_choice`` picks the alternatives: ``auto`` both, ``required`` calls only, a named function exactly
one call of it, ``none`` no grammar (and no tool description): plain text. ``parallel_tool_calls: true``
allows one to :data:`MAX_PARALLEL_CALLS` calls, ``false`` exactly one; left out, it follows what the
model's chat template can express (as llama.cpp's server decides it): SmolLM2's template cannot render
two calls, so its answers make one. Each call's ``arguments`` validate against that tool's
``parameters``. While the model writes, :class:`CallListWatch` ends the list early: at a call identical
to one already made (same name and arguments: a small model repeats its call until the token limit), and
where the budget left cannot hold another call like the ones made. The answer carries OpenAI's
``message.tool_calls`` (``call_...`` ids, arguments as a JSON string) and ``finish_reason:
"tool_calls"``; a plain answer's text is its content, also when the token limit cut it (``length``). An
answer cut by the limit keeps the calls completed before the cut (``finish_reason: "length"``); the
format's own JSON never reaches a client.
Earlier turns are rendered back in the same format: an assistant message's ``tool_calls`` as its JSON,
a ``tool`` message's result as ``{"tool_result": ...}``.

(A grammar that let the plain answer be free text, ended by the model's own end token, was measured
too: SmolLM2 then never started a call, 0 of 40 prompts; with both alternatives in JSON it calls.)
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ...protocol._tools import FunctionSpec, ToolCall, call_deltas
from ...runtime._events import GenerationEvent
from ._grammar import json_schema_grammar, require_grammar_support

if TYPE_CHECKING:
    from ...runtime._runtime import InferenceRuntime

__all__ = ["CallListWatch", "ToolAnswer", "ToolPlan", "parse_answer", "plan_tools", "render_history"]

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
MAX_PARALLEL_CALLS = 4  # calls in one answer with parallel_tool_calls: true


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for generation: the grammar and the instruction that go with them."""

    grammar: str
    instruction: str
    max_calls: int


def _call_schema(spec: FunctionSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": spec.name}, "arguments": spec.parameters or _ANY_OBJECT},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _answer_schema(specs: Sequence[FunctionSpec], allow_text: bool, max_calls: int) -> dict[str, Any]:
    calls = [_call_schema(spec) for spec in specs]
    call: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    items = {"type": "array", "items": call, "minItems": 1, "maxItems": max_calls}
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

    ``choice`` is ``none``, ``auto``, ``required`` or a function's name (already checked against ``specs``);
    ``parallel`` is ``parallel_tool_calls`` as it applies (a named function is called once whatever it says).
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
    max_calls = MAX_PARALLEL_CALLS if parallel and choice in ("auto", "required") else 1
    schema = _answer_schema(chosen, allow_text, max_calls)
    return ToolPlan(json_schema_grammar(schema, "tools"), _instruction(chosen, allow_text), max_calls)


_RESPONSE_HEAD = '{"response":"'


class _CallScanner:
    """Finds the whole call objects of an answer as its text arrives (``{"tool_calls":[{...},{...}``).

    The answer is compact JSON (the grammar's): the outer object is depth 1, the list depth 2, and each
    call an object at depth 3. Text inside strings is skipped, so a plain answer holds no call.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._call: list[str] | None = None

    def feed(self, text: str) -> list[str]:
        """The JSON texts of the calls completed by ``text``."""
        done: list[str] = []
        for char in text:
            if self._call is not None:
                self._call.append(char)
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
                if self._depth == 3 and char == "{":
                    self._call = [char]
            elif char in "}]":
                if self._depth == 3 and self._call is not None:
                    done.append("".join(self._call))
                    self._call = None
                self._depth -= 1
        return done


def _parse_call(text: str) -> tuple[str, Any] | None:
    """A whole call's ``(name, arguments)``; ``None`` if it is not a call object."""
    try:
        call = json.loads(text)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    return call["name"], call.get("arguments", {})


def _same_call_key(name: str, arguments: Any) -> tuple[str, str]:
    """What makes two calls the same call: the name and the arguments, whatever their keys' order."""
    return name, json.dumps(arguments, ensure_ascii=False, sort_keys=True)


class CallListWatch:
    """Ends one sequence's tool answer where its list of calls should end, as the model writes it.

    Called by the runtime with each piece of text and the sequence's token count so far; returns True
    to end generation there. After each whole call: a call identical to an earlier one ends the list (it
    is dropped), so does the last call ``max_calls`` allows, and so does a budget left
    (``max_tokens`` minus the tokens so far) smaller than the cheapest call made yet, which could only
    be cut. Cut there, the answer is its whole calls (:func:`parse_answer`).
    """

    def __init__(self, max_tokens: int, max_calls: int) -> None:
        self._max_tokens = max_tokens
        self._max_calls = max_calls
        self._scanner = _CallScanner()
        self._seen: set[tuple[str, str]] = set()
        self._tokens_at_last = 0
        self._cheapest: int | None = None

    def __call__(self, text: str, tokens: int) -> bool:
        for call in self._scanner.feed(text):
            parsed = _parse_call(call)
            if parsed is None:
                continue
            key = _same_call_key(*parsed)
            if key in self._seen:
                return True
            self._seen.add(key)
            cost, self._tokens_at_last = tokens - self._tokens_at_last, tokens
            self._cheapest = cost if self._cheapest is None else min(self._cheapest, cost)
            if len(self._seen) >= self._max_calls or self._max_tokens - tokens < self._cheapest:
                return True
        return False


def parse_answer(text: str) -> tuple[str | None, list[ToolCall]]:
    """The model's JSON answer as ``(content, tool_calls)``.

    The grammar guarantees the format unless generation stopped early (the token limit, a stop string,
    :class:`CallListWatch`): a plain answer cut there is its text so far, a list of calls its whole calls
    up to the first repeated one, and an answer cut before either is empty. The format's own JSON is
    never the content.
    """
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("response"), str) and len(value) == 1:
        return value["response"], []
    if value is None and text.startswith(_RESPONSE_HEAD):
        return _cut_string(text[len(_RESPONSE_HEAD) :]), []
    calls: list[ToolCall] = []
    seen: set[tuple[str, str]] = set()
    for call in _CallScanner().feed(text):
        parsed = _parse_call(call)
        if parsed is None:
            continue
        key = _same_call_key(*parsed)
        if key in seen:
            break
        seen.add(key)
        name, arguments = parsed
        arguments_text = json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall("call_" + secrets.token_hex(12), name, arguments_text))
    return (None if calls else ""), calls


def _cut_string(body: str) -> str:
    """The text of a JSON string cut before its closing quote (an escape cut in half is dropped)."""
    for trim in range(min(len(body), 6) + 1):
        try:
            value = json.loads(f'"{body[: len(body) - trim]}"')
        except ValueError:
            continue
        return str(value)
    return body


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


class ToolAnswer:
    """A stream's reshaping under a tool plan: each choice's JSON answer held, then parsed at its end.

    Until a choice ends, its events keep their token counts and logprobs but carry no text; its last
    event carries the answer: the content of a plain answer, or the calls as tool-call deltas (one event
    per delta) and ``finish_reason: "tool_calls"`` (``"length"`` when the token limit cut the list).
    """

    def __init__(self) -> None:
        self._held: dict[int, list[str]] = {}

    def __call__(self, event: GenerationEvent) -> list[GenerationEvent]:
        held = self._held.setdefault(event.index, [])
        held.append(event.text)
        if event.finish_reason is None:
            return [replace(event, text="")]
        content, calls = parse_answer("".join(self._held.pop(event.index)))
        if not calls:
            return [replace(event, text=content or "")]
        pieces = [
            GenerationEvent(event.index, "", None, event.completion_tokens, tool_calls=(delta,))
            for k, call in enumerate(calls)
            for delta in call_deltas(k, call)
        ]
        finish = "length" if event.finish_reason == "length" else "tool_calls"
        return [*pieces, replace(event, text="", finish_reason=finish)]
