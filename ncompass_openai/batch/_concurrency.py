"""How many requests a batch job keeps in flight: a fixed number, or ``auto``, which finds the knee.

A deployment's throughput rises with the requests in flight until its batch is full (the knee), then
stays flat while latency grows: past the knee extra requests only queue. ``auto`` climbs to the knee at
run time and stays there:

- it starts at 8 and measures tokens per second over windows of as many finished requests as are in
  flight (at least 8; after a change, a window starts once half the requests then in flight are back),
  quadrupling the level while throughput rises by at least 5 %, and keeps the last level that paid:
  past the knee a higher level costs only latency, so it overshoots rather than creeps up;
- it never goes above the server's per-key limit (``NCompass-Max-In-Flight``), and a ``429`` lowers
  the level below the in-flight count that hit it and pauses sending for its ``Retry-After``;
- once settled it backs off a quarter when latency stays 1.5x over what it was at the settled level
  for two windows without throughput rising, and probes a quarter higher every ten windows, so a knee
  that moves (other tenants, longer prompts) is followed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["AutoConcurrency", "Concurrency", "FixedConcurrency", "make_concurrency"]

_GAIN = 1.05  # a higher level must beat the last by this much to pay
_SLOWER = 1.5  # latency rise (at flat throughput) that backs off
_PROBE_EVERY = 10  # settled windows between two probes upwards


class Concurrency:
    """A level of requests in flight, told about every result."""

    level: int
    cap: int | None = None

    def on_success(self, now: float, latency: float, tokens: int) -> None:
        """A request finished at ``now`` after ``latency`` s, with ``tokens`` completion tokens."""

    def on_overload(self, in_flight: int) -> None:
        """A ``429`` came back while ``in_flight`` requests were out."""

    def set_cap(self, cap: int) -> None:
        """The server's per-key limit (``NCompass-Max-In-Flight``)."""
        if cap >= 1 and cap != self.cap:
            self.cap = cap
            self.level = min(self.level, cap)


class FixedConcurrency(Concurrency):
    """``N``: always ``N`` in flight (a ``429`` still pauses sending, but the level stays)."""

    def __init__(self, level: int) -> None:
        self.level = level


@dataclass
class _Window:
    started: float = 0.0
    results: int = 0
    tokens: int = 0
    latency: float = 0.0


class AutoConcurrency(Concurrency):
    """``auto``: climbs while throughput rises, settles at the knee, follows it (see the module).

    Args:
        start: The first level (at most the server's limit once it is known).
        cap: The highest level, if known up front.
    """

    def __init__(self, start: int = 8, cap: int | None = None) -> None:
        self.level = start if cap is None else min(start, cap)
        self.cap = cap
        self.settled = False
        self._skip = 0  # results still to ignore after a change: requests sent before it
        self._window: _Window | None = None
        self._best: tuple[int, float] | None = None  # (level, tokens/s) of the last level that paid
        self._settled_latency = 0.0
        self._settled_rate = 0.0
        self._windows_settled = 0
        self._slow_windows = 0
        self.history: list[tuple[int, float]] = []  # (level, tokens/s) of each window, for the report

    def _change(self, level: int) -> None:
        level = max(1, level if self.cap is None else min(level, self.cap))
        # Half the requests in flight at the change: by then the deployment's batch is the new level's.
        self._skip = max(self.level, level) // 2 if level != self.level else 0
        self.level = level
        self._window = None

    def on_overload(self, in_flight: int) -> None:
        """Caps the level below what hit the server's limit."""
        limit = max(1, in_flight - 1)
        self.cap = limit if self.cap is None else min(self.cap, limit)
        if self.level > limit:
            self._change(limit)
            if self._best is not None and self._best[0] > limit:
                self._best = None

    def on_success(self, now: float, latency: float, tokens: int) -> None:
        """Counts a result into the current window; a full window decides the next level."""
        if self._skip > 0:
            self._skip -= 1
            return
        window = self._window
        if window is None:
            self._window = _Window(started=now)
            return
        window.results += 1
        window.tokens += max(tokens, 1)
        window.latency += latency
        elapsed = now - window.started
        if window.results < max(self.level, 8) or elapsed < 0.1:
            return
        rate = window.tokens / elapsed
        mean_latency = window.latency / window.results
        self.history.append((self.level, rate))
        self._window = _Window(started=now)
        if not self.settled:
            self._climb(rate, mean_latency)
        else:
            self._follow(rate, mean_latency)

    def _next_level(self, factor: float) -> int:
        return max(self.level + 1, math.ceil(self.level * factor))

    def _climb(self, rate: float, latency: float) -> None:
        at_cap = self.cap is not None and self.level >= self.cap
        if self._best is None or rate >= self._best[1] * _GAIN:
            self._best = (self.level, rate)
            if not at_cap:
                self._change(self._next_level(4.0))
                return
        measured = self.level
        if self._best[0] != self.level:
            self._change(self._best[0])  # the higher level did not pay: back to the last one that did
        self.settled = True
        self._settled_rate = self._best[1]
        self._settled_latency = latency if self.level == measured else 0.0  # 0: the next window sets it
        self._windows_settled = 0

    def _follow(self, rate: float, latency: float) -> None:
        self._windows_settled += 1
        if self._settled_latency == 0.0:
            self._settled_latency = latency
        slow = latency > self._settled_latency * _SLOWER and rate < self._settled_rate * _GAIN
        self._slow_windows = self._slow_windows + 1 if slow else 0
        if self._slow_windows >= 2 and self.level > 1:  # two in a row: one slow window is noise (a GC)
            self._slow_windows = 0
            self._change(math.floor(self.level * 0.75))
            self._settled_latency, self._settled_rate = 0.0, rate
        elif self._windows_settled >= _PROBE_EVERY and (self.cap is None or self.level < self.cap):
            self._best = (self.level, rate)
            self.settled = False
            self._change(self._next_level(1.25))
        else:
            self._settled_rate = max(self._settled_rate, rate)


def make_concurrency(value: int | str) -> Concurrency:
    """``"auto"`` or a positive number (an int, or a string of one, as the CLI gives it).

    Raises:
        ValueError: anything else.
    """
    if value == "auto":
        return AutoConcurrency()
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    if number is None or number < 1:
        raise ValueError(f"concurrency must be 'auto' or a positive integer, got {value!r}.")
    return FixedConcurrency(number)
