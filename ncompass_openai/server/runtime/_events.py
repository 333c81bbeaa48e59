"""The typed items of a generation stream: what every backend hands the serving layer.

- :class:`GenerationEvent`: one token's text (or a tool call's piece) of choice ``index``, its finish
  reason on the last one, its logprobs when asked for;
- :class:`Usage`: the counts an upstream reported, taken in by the stream itself (never written into it
  from outside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..engines._base import TokenLogprobs
from ..protocol._tools import ToolCallDelta

__all__ = ["FinishReason", "GenerationEvent", "Usage"]

FinishReason = Literal["stop", "length"]
"""What an engine ends a sequence with; a backend may end an answer with another reason (``tool_calls``)."""


@dataclass(frozen=True)
class GenerationEvent:
    """One generated token of choice ``index``: its newly released text, and the running token count.

    ``logprobs`` is the token's (when the request asked for them): its bytes, which the held-back text of
    a possible stop string may release only with a later event.
    """

    index: int
    text: str
    finish_reason: str | None
    completion_tokens: int
    logprobs: TokenLogprobs | None = None
    cached_tokens: int = 0  # on a choice's first event: prompt tokens the engine reused from its cache
    tool_calls: tuple[ToolCallDelta, ...] = ()  # pieces of the choice's tool calls


@dataclass(frozen=True)
class Usage:
    """An upstream's own count of a request's tokens (it replaces what the stream counted)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
