"""Why the local server refuses each OpenAI request field it does not implement.

A request with one of these answers 400 naming the field and giving this reason (``_errors.py``);
docs/openai-fields.md shows the same reasons, and a test keeps the two equal.
"""

from __future__ import annotations

__all__ = ["REASONS"]

_STORED = "chat completions are not stored (`/v1/responses` stores)"
_CACHE = "no prompt cache"
_REASONING = "not a reasoning model"

REASONS: dict[str, str] = {
    "audio": "text only",
    "modalities": "text only",
    "functions": "the legacy form of `tools`: send `tools`",
    "function_call": "the legacy form of `tool_choice`: send `tool_choice`",
    "metadata": _STORED,
    "store": _STORED,
    "moderation": "no moderation on the local server",
    "prediction": "no predicted outputs",
    "prompt_cache_key": _CACHE,
    "prompt_cache_options": _CACHE,
    "prompt_cache_retention": _CACHE,
    "reasoning_effort": _REASONING,
    "verbosity": _REASONING,
    "safety_identifier": "no abuse monitoring on the local server",
    "service_tier": "one tier",
    "web_search_options": "no web search",
}
