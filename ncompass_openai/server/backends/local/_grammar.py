"""From request fields to llguidance grammars: the constraint an engine enforces token by token.

``response_format`` ``json_object`` and ``json_schema`` become a JSON-schema grammar (compact JSON: no
whitespace between tokens, which a small model otherwise repeats until the token limit). An object schema
that lists ``properties`` and says nothing of other keys admits no other keys (``closed``), as llama.cpp's
grammars do: a small model otherwise invents keys (often the schema's own keywords) until the token
limit, and every answer still validates. A schema with a keyword llguidance cannot enforce is refused
with a 400 naming it, never decoded unconstrained. Grammars are validated once per distinct schema
(cached); the engine compiles each for its vocabulary once too.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from ..._exceptions import InvalidRequest

if TYPE_CHECKING:
    from ...runtime._runtime import InferenceRuntime

__all__ = ["closed", "format_grammar", "json_schema_grammar", "require_grammar_support"]

_COMPILE_OPTIONS = {"whitespace_flexible": False}
_CACHED = 256
# Where JSON Schema nests subschemas: maps of them, single ones, lists of them.
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA = ("items", "additionalProperties", "unevaluatedProperties", "not", "contains", "propertyNames")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_OPEN_KEYWORDS = ("additionalProperties", "patternProperties", "unevaluatedProperties")


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on each object that lists ``properties`` and has no
    word on other keys. Answers are then a subset of what ``schema`` allows.

    Left open: an object whose ``required`` names a key it does not list, and every schema with an
    ``allOf`` (an intersection of closed objects would admit too little).
    """
    if _has_all_of(schema):
        return schema
    return _close(schema)


def _has_all_of(node: Any) -> bool:
    if isinstance(node, dict):
        return "allOf" in node or any(_has_all_of(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_all_of(v) for v in node)
    return False


def _close(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _close(sub) for name, sub in out[key].items()}
    for key in _SUBSCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = _close(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_close(sub) for sub in out[key]]
    listed = out.get("properties")
    required = out.get("required", [])
    if (
        isinstance(listed, dict)
        and not any(key in out for key in _OPEN_KEYWORDS)
        and isinstance(required, list)
        and all(name in listed for name in required)
    ):
        out["additionalProperties"] = False
    return out


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:  # pragma: no cover - the server extra installs it
        raise InvalidRequest(
            "Structured outputs need llguidance, which is not installed on this server: "
            "pip install 'ncompass-openai[server]'.",
            param="response_format",
        ) from None
    return llguidance


@functools.lru_cache(maxsize=_CACHED)
def _compile(schema_json: str) -> tuple[str, str]:
    """``(grammar, error)`` for one schema's JSON text; ``error`` is ``""`` when it can be enforced."""
    matcher = _llguidance().LLMatcher
    enforced = json.dumps(closed(json.loads(schema_json)), separators=(",", ":"))
    try:
        grammar = matcher.grammar_from_json_schema(enforced, defaults=_COMPILE_OPTIONS)
    except ValueError as exc:
        return "", str(exc)
    return grammar, matcher.validate_grammar(grammar)


def json_schema_grammar(schema: dict[str, Any], param: str) -> str:
    """The grammar that enforces ``schema``; a 400 naming ``param`` when it cannot be enforced.

    Raises:
        InvalidRequest: the schema is invalid, or uses a keyword (``uniqueItems``, ``not``, ...) or format
            that constrained decoding cannot guarantee; the message quotes the reason.
    """
    # Not sort_keys: the order of `properties` is the order the answer's keys come in.
    grammar, error = _compile(json.dumps(schema, separators=(",", ":")))
    if error:
        reason = error.strip().replace("\n", " ")
        raise InvalidRequest(
            f"`{param}` cannot be enforced by this server's constrained decoding: {reason}. Remove or "
            "change that part of the schema (unsupported keywords are refused, never ignored).",
            param=param,
        )
    return grammar


def require_grammar_support(runtime: InferenceRuntime, param: str) -> None:
    """A 400 naming ``param`` when the engine cannot decode under a grammar."""
    if not runtime.supports_grammar:
        raise InvalidRequest(
            f"`{param}` needs constrained decoding, which the {runtime.engine_name} engine does not do: "
            "remove it, or serve a model (the llama engine).",
            param=param,
        )


def format_grammar(
    runtime: InferenceRuntime, kind: str, schema: dict[str, Any] | None, param: str
) -> str | None:
    """The grammar of an answer format: ``text`` (none), ``json_object`` or ``json_schema``.

    ``param`` names the format field (``response_format``, ``text.format``); a schema's problems are
    blamed on its ``schema`` member.
    """
    if kind == "text":
        return None
    require_grammar_support(runtime, param)
    if kind == "json_object" or schema is None:
        return json_schema_grammar({"type": "object"}, param)
    return json_schema_grammar(schema, f"{param}.schema")
