"""Pydantic's validation errors as one sentence that names the field and the fix (the protocol's 400)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._refused_fields import REASONS

__all__ = ["validation_message"]

_TYPE_TAG = re.compile(
    r"^(str|int|float|bool|none|dict|list|literal|function-\w+|[a-z_]+\[.*\])$", re.IGNORECASE
)


def _loc_to_param(loc: Sequence[Any]) -> str | None:
    parts: list[str] = []
    for p in loc:
        if p in ("body", "query", "path", "header"):
            continue
        if isinstance(p, str) and (_TYPE_TAG.match(p) or p[:1].isupper()):
            break  # a union member's tag (`str`, `list[str]`, a model name), not a field name
        parts.append(str(p))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """One readable sentence for pydantic's validation errors, naming the field and the fix."""
    if not errors:
        return "The request is invalid.", None
    first = errors[0]
    kind = str(first.get("type", ""))
    loc = list(first.get("loc", ()))
    param = _loc_to_param(loc)
    if kind in ("json_invalid", "json_decode", "value_error.jsondecode"):
        detail = first.get("ctx", {}).get("error") if isinstance(first.get("ctx"), Mapping) else None
        extra = f" ({detail})" if detail else ""
        return (
            f"The request body is not valid JSON{extra}. Send a JSON object with "
            "`Content-Type: application/json`.",
            None,
        )
    if kind == "extra_forbidden":
        reason = REASONS.get(str(param), "this server does not support it")
        return f"Unsupported field `{param}`: {reason}. Remove it from the request.", param
    if kind == "missing":
        return f"Missing required field `{param}`. Add it to the request.", param
    if param is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "The request body must be a JSON object.", None
    msg = str(first.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if param is None:
        return f"Invalid request: {msg}.", None
    others = [e for e in errors[1:] if _loc_to_param(list(e.get("loc", ()))) != param]
    more = f" ({len(others)} more problem(s) in the request)" if others else ""
    if len({_loc_to_param(list(e.get("loc", ()))) for e in errors}) == 1 and len(errors) > 1:
        msg = " or ".join(dict.fromkeys(str(e.get("msg", "")) for e in errors))
    return f"Invalid value for `{param}`: {msg}.{more}", param
