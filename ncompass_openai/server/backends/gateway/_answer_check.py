"""The gateway's check of a structured answer: an upstream's JSON against the request's format,
and its tool calls against the request's tools.

Upstreams declared to enforce ``response_format`` (``--upstream-supports response_format``) are still
not trusted with it: each choice that ends on its own (``finish_reason: "stop"``) is parsed and, for
``json_schema``, validated with ``jsonschema`` before anything of it is sent. An answer that does not
match is the upstream's error (502), never output presented as valid. A choice cut by ``max_tokens``
(``"length"``) goes out as it is, as from every engine: its finish reason says it is incomplete.

Likewise with ``--upstream-supports tools``: each call of a choice that was not cut must name an
offered function (the one ``tool_choice`` names, if it names one), and its arguments must be a JSON
object valid against that function's ``parameters``; ``tool_choice: "required"`` needs a call, a named
function exactly one call of it, ``"none"`` allows none.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from ..._exceptions import InvalidRequest
from ...protocol._schemas import ResponseFormat
from ...protocol._tools import FunctionSpec, ToolCall

__all__ = ["AnswerCheck", "CallsCheck", "answer_check", "calls_check"]

AnswerCheck = Callable[[str], "str | None"]
"""``check(text)``: why the answer does not match its format, or ``None`` when it does."""

CallsCheck = Callable[[list[ToolCall], "str | None"], "str | None"]
"""``check(calls, finish_reason)``: why a choice's whole tool calls do not match the request's tools, or
``None`` when they do."""


def _validator(schema: dict[str, Any], param: str) -> jsonschema.protocols.Validator:
    """A validator of ``schema``; a schema that is not one is a 400 naming ``param``."""
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(f"`{param}` is not a valid JSON schema: {exc.message}.", param=param) from None
    return cls(schema)


def _mismatch(validator: jsonschema.protocols.Validator, value: Any) -> str | None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    return f"at {where}: {error.message}"


def answer_check(fmt: ResponseFormat) -> AnswerCheck | None:
    """The check of ``fmt``'s answers; ``None`` for plain text. A schema that is not one is a 400."""
    if fmt.type == "text":
        return None
    schema: dict[str, Any] | None = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    validator = None
    if fmt.type == "json_schema" and schema is not None:
        validator = _validator(schema, "response_format.json_schema.schema")

    def check(text: str) -> str | None:
        try:
            value = json.loads(text)
        except ValueError as exc:
            return f"it is not JSON ({exc})"
        if validator is None:
            return None if isinstance(value, dict) else "it is not a JSON object"
        return _mismatch(validator, value)

    return check


def calls_check(functions: list[FunctionSpec], choice: str | None) -> CallsCheck:
    """The check of the tool calls answering a request with these ``functions`` and ``tool_choice``.

    ``choice``: ``none``, ``auto``, ``required`` or a function's name. A ``parameters`` schema that is
    not one is a 400 naming it.
    """
    validators = {
        f.name: _validator(f.parameters, f"tools[{i}].function.parameters") if f.parameters else None
        for i, f in enumerate(functions)
    }
    named = choice if choice not in (None, "none", "auto", "required") else None

    def check(calls: list[ToolCall], finish: str | None) -> str | None:
        if finish == "length":
            return None  # cut by max_tokens: it goes out as it is, and says so
        if not calls:
            return (
                "it made no call, and `tool_choice` asks for one" if choice == "required" or named else None
            )
        if choice == "none":
            return "it made a call, and `tool_choice` is `none`"
        if named is not None and len(calls) > 1:
            return f"it made {len(calls)} calls, and a named `tool_choice` is called exactly once"
        for call in calls:
            name = call.name
            if name not in validators:
                return f"it called `{name}`, which is not one of the request's tools"
            if named is not None and name != named:
                return f"it called `{name}`, and `tool_choice` names `{named}`"
            try:
                arguments = json.loads(call.arguments or "{}")
            except ValueError as exc:
                return f"the arguments of `{name}` are not JSON ({exc})"
            if not isinstance(arguments, dict):
                return f"the arguments of `{name}` are not a JSON object"
            validator = validators[name]
            why = _mismatch(validator, arguments) if validator is not None else None
            if why is not None:
                return f"the arguments of `{name}` {why}"
        return None

    return check
