"""An upstream's logprobs (OpenAI's chat and completions shapes) read back into per-token items."""

from __future__ import annotations

from typing import Any

from ...engines._base import TokenLogprobs

__all__ = ["parse_chat_logprobs", "parse_completion_logprobs"]


def _bytes(entry: dict[str, Any]) -> bytes:
    raw = entry.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)
    return str(entry.get("token") or "").encode()


def parse_chat_logprobs(value: Any) -> list[TokenLogprobs]:
    """The tokens of a chat choice's (or chunk's) ``logprobs``; ``[]`` for none. Raises ValueError."""
    if not value:
        return []
    out = []
    for entry in value.get("content") or ():
        top = tuple((_bytes(t), float(t["logprob"])) for t in entry.get("top_logprobs") or ())
        out.append(TokenLogprobs(_bytes(entry), float(entry["logprob"]), top))
    return out


def parse_completion_logprobs(value: Any) -> list[TokenLogprobs]:
    """The tokens of a completion choice's (or chunk's) legacy ``logprobs``; ``[]`` for none."""
    if not value:
        return []
    tokens = value.get("tokens") or []
    values = value.get("token_logprobs") or []
    tops = value.get("top_logprobs") or [None] * len(tokens)
    out = []
    for token, logprob, top in zip(tokens, values, tops, strict=True):
        best = tuple((str(t).encode(), float(lp)) for t, lp in (top or {}).items())
        out.append(TokenLogprobs(str(token).encode(), float(logprob), best))
    return out
