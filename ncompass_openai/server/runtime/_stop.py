"""Where a sequence ends early: stop strings, and a backend's watch over the text.

Stop strings are matched on the decoded text as it arrives, also when one spans several tokens. Text
that might be the start of a stop string is held back until it is known not to be, so a stop string
never reaches the client. A :data:`Watch` sees the text released and the token count, and ends the
sequence (``finish_reason: "stop"``) when it returns True, its text so far kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["StopMatcher", "Watch"]

Watch = Callable[[str, int], bool]
"""One sequence's watch: called with each piece of released text and the tokens generated so far."""


class StopMatcher:
    """Releases text as it arrives, holding back any tail that could still start a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to send, whether a stop string matched)."""
        if not self._stops:
            return text, False
        buf = self._buf + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._buf = ""
            return buf[: min(hits)], True
        keep = 0
        for k in range(min(self._hold, len(buf)), 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self._stops):
                keep = k
                break
        self._buf = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self._buf = self._buf, ""
        return out
