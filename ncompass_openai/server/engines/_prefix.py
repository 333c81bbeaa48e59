"""Prompt (prefix) reuse: which slot a new sequence takes, and how much of a cached prompt it keeps.

A finished sequence's KV cache stays in its slot. A new sequence of the same group (the tenant: one
tenant's cache never serves another's, whose time to first token would tell what it asked) keeps the
longest prefix of its prompt that a slot already holds, and only the rest is decoded:

- a free slot holding a prefix: that slot, cut back to the prefix;
- a busy slot holding a longer one (another request with the same system prompt is generating): a free
  slot is cleared and given a copy of that prefix (in a unified KV cache the copy shares the cells);
- else the free slot whose cache is the least recently used.

At least the prompt's last token is always decoded again, since its logits are needed. A sequence that
must give the same text every time (a ``seed``) keeps nothing, and the engine empties the cache first
when nothing else is generating: llama.cpp's attention rounds differently with where a sequence's cells
lie in the cache, and a sampled (or even a greedy) answer can follow. (A prompt whose last token alone is
decoded again gave bit-equal logits where its cells lay as before.) Its prompt is still cached for the
next ones.

Idle slots hold at most ``budget`` tokens together; older ones are dropped first (cached cells widen
every decode step's attention window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Placement", "SlotCache"]


@dataclass(frozen=True)
class Placement:
    """Where a new sequence goes: ``slot``, cleared from ``keep`` on, after a copy of ``keep`` tokens from
    ``copy_from`` (``None``: the slot's own cache) when ``copy_from`` is set."""

    slot: int
    keep: int
    copy_from: int | None = None


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotCache:
    """The tokens each slot's sequence holds in the KV cache (positions 0 .. n-1) and whose they are.

    Args:
        slots: sequences the context holds.
        budget: most tokens the idle slots may keep cached together.
    """

    def __init__(self, slots: int, budget: int) -> None:
        self.tokens: list[list[int]] = [[] for _ in range(slots)]
        self.group: list[str | None] = [None] * slots
        self.budget = budget
        self._used = [0] * slots  # when each slot was last taken, for least-recently-used eviction
        self._clock = 0

    def place(
        self, prompt: Sequence[int], group: str | None, free: Sequence[int], *, reuse: bool = True
    ) -> Placement:
        """The slot among ``free`` for a sequence of ``group`` with ``prompt``, and what it keeps.

        ``reuse=False``: keep nothing (the whole prompt is decoded), but cache it for the group.
        """
        limit = len(prompt) - 1  # the last prompt token is decoded again for its logits
        best_free, best_free_len = -1, 0
        best_any, best_any_len = -1, 0
        if group is not None and limit > 0 and reuse:
            for slot, tokens in enumerate(self.tokens):
                if self.group[slot] != group or not tokens:
                    continue
                length = min(_common_prefix(tokens, prompt), limit)
                if slot in free and length > best_free_len:
                    best_free, best_free_len = slot, length
                if length > best_any_len:
                    best_any, best_any_len = slot, length
        self._clock += 1
        if best_free >= 0 and best_free_len >= best_any_len:
            placement = Placement(best_free, best_free_len)
        else:
            victim = min(free, key=lambda s: (len(self.tokens[s]) > 0, self._used[s]))
            if best_any >= 0:
                placement = Placement(victim, best_any_len, copy_from=best_any)
            else:
                placement = Placement(victim, 0)
        slot = placement.slot
        self._used[slot] = self._clock
        source = self.tokens[placement.copy_from] if placement.copy_from is not None else self.tokens[slot]
        self.tokens[slot] = list(source[: placement.keep])
        self.group[slot] = group
        return placement

    def forget(self, slot: int) -> None:
        """The slot's cache is gone (cleared, or never to be trusted)."""
        self.tokens[slot] = []
        self.group[slot] = None

    def clear(self) -> None:
        """Every slot's cache is gone."""
        for slot in range(len(self.tokens)):
            self.forget(slot)

    def over_budget(self, idle: Sequence[int]) -> list[int]:
        """Idle slots to clear, least recently used first, until the idle ones keep at most ``budget``."""
        total = sum(len(self.tokens[s]) for s in idle)
        out = []
        for slot in sorted(idle, key=lambda s: self._used[s]):
            if total <= self.budget:
                break
            if self.tokens[slot]:
                total -= len(self.tokens[slot])
                out.append(slot)
        return out
