"""The llama engine's slots: the sequence each one decodes, and the state it is in.

Like llama.cpp's server, a slot's state is named, not implied: a sequence is ``PREFILLING`` while the
uncached part of its prompt is fed to the model in chunks, then ``GENERATING`` one sampled token per step.
"""

from __future__ import annotations

import codecs
import enum
import math
from typing import Any

import numpy as np

from ._base import SequenceRequest, TokenLogprobs
from ._constraint import SequenceConstraint

__all__ = ["Sequence", "SlotState", "token_logprobs"]


class SlotState(enum.Enum):
    """What a slot's sequence does in the next decode step."""

    PREFILLING = "prefilling"  # its prompt's uncached tokens go in, as many as the batch has room for
    GENERATING = "generating"  # its last sampled token goes in


class Sequence:
    """A sequence in a slot: its prompt still to feed, sampler chain, position and UTF-8 decoder."""

    def __init__(
        self,
        request: SequenceRequest,
        slot: int,
        pending: list[int],
        pos: int,
        sampler: Any,
        constraint: SequenceConstraint | None,
    ) -> None:
        self.id = request.id
        self.slot = slot
        self.state = SlotState.PREFILLING
        self.pending = pending  # tokens not yet decoded (the prompt's uncached part, then each sampled one)
        self.pos = pos  # tokens in the KV cache (a reused prefix, then what was decoded)
        self.cached = pos  # prompt tokens reused from the cache, until the first token tells them
        self.left = request.params.max_tokens
        self.hold_end = request.params.min_tokens  # tokens still to sample before the end may be
        self.sampler = sampler
        self.constraint = constraint
        self.logprobs = request.params.logprobs
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, room: int) -> list[int]:
        """The tokens this step decodes of it (at most ``room``); ready to sample once none are left."""
        chunk = self.pending[:room]
        self.pending = self.pending[len(chunk) :]
        self.pos += len(chunk)
        return chunk

    @property
    def ready(self) -> bool:
        """Whether this step's decode ends with its logits, to sample its next token from."""
        return not self.pending

    def sampled(self, token: int) -> None:
        """Its next token was sampled: the next step decodes it."""
        self.state = SlotState.GENERATING
        self.pending = [token]


def token_logprobs(raw: Any, token: int, data: bytes, top: int, piece_of: Any) -> TokenLogprobs:
    """Log-softmax of the raw logits: the sampled token's value and the ``top`` most likely tokens'."""
    peak = raw.max()
    norm = peak + math.log(float(np.exp(raw - peak).sum()))
    best: tuple[tuple[bytes, float], ...] = ()
    if top > 0:
        ids = np.argpartition(-raw, top - 1)[:top]
        ids = ids[np.argsort(-raw[ids], kind="stable")]
        best = tuple((piece_of(int(t)), float(raw[t] - norm)) for t in ids)
    return TokenLogprobs(data, float(raw[token] - norm), best)
