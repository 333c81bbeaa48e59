"""Why the local server refuses each OpenAI request field it does not implement, and the values of each
that it accepts as if the field were left out.

A field at one of its neutral values (``metadata: {}``, ``store: false`` on chat, the Responses API's
``include: []`` that the openai-agents SDK always sends) is dropped before the body is checked, so an
unchanged client works; any other value is a 400 naming the field and giving its reason
(``_validation.py``). docs/openai-fields.md shows the same reasons and values, and a test keeps them equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CHAT", "REASONS", "RESPONSES", "Refused", "drop_neutral"]


@dataclass(frozen=True)
class Refused:
    """A refused field: why, and the values that mean the same as leaving it out (``null`` always does)."""

    reason: str
    neutral: tuple[Any, ...] = ()

    def is_neutral(self, value: Any) -> bool:
        return value is None or any(value == v and type(value) is type(v) for v in self.neutral)


_STORED = Refused("chat completions are not stored (`/v1/responses` stores)")
_CACHE = "no prompt cache"
_REASONING = "not a reasoning model"
_SAFETY = Refused("no abuse monitoring on the local server")
_MODERATION = Refused("no moderation on the local server")
_ONE_TIER = Refused("one tier", ("auto", "default"))

CHAT: dict[str, Refused] = {
    "audio": Refused("text only"),
    "modalities": Refused("text only", (["text"],)),
    "functions": Refused("the legacy form of `tools`: send `tools`", ([],)),
    "function_call": Refused("the legacy form of `tool_choice`: send `tool_choice`", ("none", "auto")),
    "metadata": Refused(_STORED.reason, ({},)),
    "store": Refused(_STORED.reason, (False,)),
    "moderation": _MODERATION,
    "prediction": Refused("no predicted outputs"),
    "prompt_cache_key": Refused(_CACHE),
    "prompt_cache_options": Refused(_CACHE, ({},)),
    "prompt_cache_retention": Refused(_CACHE),
    "reasoning_effort": Refused(_REASONING, ("none",)),
    "verbosity": Refused(_REASONING, ("medium",)),
    "safety_identifier": _SAFETY,
    "service_tier": _ONE_TIER,
    "web_search_options": Refused("no web search"),
}
"""``POST /v1/chat/completions``'s refused fields."""

_BACKGROUND = "no background responses: send `stream: true` to read an answer as it comes"

RESPONSES: dict[str, Refused] = {
    "access_programs": Refused("no access programs", ({},)),
    "background": Refused(_BACKGROUND, (False,)),
    "background_options": Refused(_BACKGROUND, ({},)),
    "context_management": Refused("no server-side compaction of the conversation", ([],)),
    "conversation": Refused("no Conversations API: chain responses with `previous_response_id`"),
    "image": Refused("text only", ({},)),
    "include": Refused("no extra output data", ([],)),
    "moderation": _MODERATION,
    "prompt": Refused("no stored prompts: send `instructions` and `input`"),
    "prompt_cache_key": Refused(_CACHE),
    "prompt_cache_options": Refused(_CACHE, ({},)),
    "prompt_cache_retention": Refused(_CACHE),
    "reasoning": Refused(_REASONING, ({},)),
    "safety_identifier": _SAFETY,
    "service_tier": _ONE_TIER,
    "stream_options": Refused("no obfuscation of streamed events", ({}, {"include_obfuscation": False})),
    "top_logprobs": Refused("no logprobs on `/v1/responses`: use `/v1/chat/completions`", (0,)),
    "truncation": Refused("earlier turns are never dropped", ("disabled",)),
}
"""``POST /v1/responses``'s refused fields."""

REASONS: dict[str, str] = {name: field.reason for table in (CHAT, RESPONSES) for name, field in table.items()}
"""Each refused field's reason (a field refused on both surfaces has one reason)."""


def drop_neutral(body: Any, refused: Mapping[str, Refused]) -> Any:
    """``body`` without the refused fields it sends at a neutral value (a non-object passes unchanged)."""
    if not isinstance(body, dict) or not any(name in body for name in refused):
        return body
    return {k: v for k, v in body.items() if k not in refused or not refused[k].is_neutral(v)}
