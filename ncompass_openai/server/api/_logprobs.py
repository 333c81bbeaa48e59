"""OpenAI's two logprobs shapes, from the per-token :class:`TokenLogprobs` of a stream's events.

The gateway reads an upstream's logprobs back into the same tokens (``backends/gateway/_logprobs.py``).

Chat (``logprobs: true``, ``top_logprobs: 0..20``): ``{"content": [{"token", "logprob", "bytes",
"top_logprobs": [{"token", "logprob", "bytes"}, ...]}, ...], "refusal": null}``.
Completions (``logprobs: 0..5``, the legacy shape): ``{"tokens", "token_logprobs", "top_logprobs":
[{token: logprob}, ...], "text_offset"}``. A token that is part of a multibyte character has text with
U+FFFD in it; its ``bytes`` are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..engines._base import TokenLogprobs

__all__ = ["chat_logprobs", "completion_logprobs"]


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _chat_entry(entry: TokenLogprobs) -> dict[str, Any]:
    return {
        "token": _text(entry.token),
        "logprob": entry.logprob,
        "bytes": list(entry.token),
        "top_logprobs": [{"token": _text(t), "logprob": lp, "bytes": list(t)} for t, lp in entry.top],
    }


def chat_logprobs(entries: Sequence[TokenLogprobs]) -> dict[str, Any]:
    """``choices[i].logprobs`` of a chat answer (or of one chunk, with that chunk's tokens)."""
    return {"content": [_chat_entry(e) for e in entries], "refusal": None}


def completion_logprobs(entries: Sequence[TokenLogprobs], offset: int = 0) -> dict[str, Any]:
    """``choices[i].logprobs`` of a completion; ``offset`` is where the first token starts in the text."""
    tokens = [_text(e.token) for e in entries]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{_text(t): lp for t, lp in e.top} for e in entries],
        "text_offset": offsets,
    }
