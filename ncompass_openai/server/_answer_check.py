"""The openai engine's check of a structured answer: an upstream's JSON against the request's format.

Upstreams declared to enforce ``response_format`` (``--upstream-supports response_format``) are still
not trusted with it: each choice that ends on its own (``finish_reason: "stop"``) is parsed and, for
``json_schema``, validated with ``jsonschema`` before anything of it is sent. An answer that does not
match is the upstream's error (502), never output presented as valid. A choice cut by ``max_tokens``
(``"length"``) goes out as it is, as from every engine: its finish reason says it is incomplete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from ._exceptions import InvalidRequest
from ._schemas import ResponseFormat

__all__ = ["AnswerCheck", "answer_check"]

AnswerCheck = Callable[[str], "str | None"]
"""``check(text)``: why the answer does not match its format, or ``None`` when it does."""


def answer_check(fmt: ResponseFormat) -> AnswerCheck | None:
    """The check of ``fmt``'s answers; ``None`` for plain text. A schema that is not one is a 400."""
    if fmt.type == "text":
        return None
    schema: dict[str, Any] | None = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    validator = None
    if fmt.type == "json_schema" and schema is not None:
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            raise InvalidRequest(
                f"`response_format.json_schema.schema` is not a valid JSON schema: {exc.message}.",
                param="response_format.json_schema.schema",
            ) from None
        validator = cls(schema)

    def check(text: str) -> str | None:
        try:
            value = json.loads(text)
        except ValueError as exc:
            return f"it is not JSON ({exc})"
        if validator is None:
            return None if isinstance(value, dict) else "it is not a JSON object"
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        return f"at {where}: {error.message}"

    return check
