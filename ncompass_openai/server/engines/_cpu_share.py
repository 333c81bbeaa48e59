"""The cores other processes leave the engine: how many threads a llama.cpp step can use now.

llama.cpp's threads spin while they wait for each other at every barrier, so a step split over more
threads than there are free cores stalls whenever one of them is preempted: with one busy neighbour on 2
cores, 8 chats decoded with 2 threads took 1.9x the time they took with 1, and a stream with 2 threads
fell to 0.42x (``bench/threads.py``). The engine therefore asks before each step how many cores other
processes kept busy since it last asked (``/proc/stat`` less this process's own CPU time), and uses at
most the cores left, never fewer than one. Where ``/proc/stat`` is missing (not Linux) it uses the
configured counts.
"""

from __future__ import annotations

import math
import os
import time

__all__ = ["CpuShare"]

_TICK = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
_SLACK = 0.25  # of a core: a neighbour's short bursts do not take a thread away


def _busy_seconds() -> float | None:
    """CPU seconds every core spent busy since boot; ``None`` without ``/proc/stat``."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) * _TICK


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


class CpuShare:
    """The threads a step may use: ``(one-token steps, batch steps)`` within the configured counts.

    Args:
        decode_threads: the configured threads of one-token steps.
        threads: the configured threads of prompt and batch steps.
        cores: the machine's cores.
        interval: seconds between two looks at the machine (a look costs a file read).
    """

    def __init__(self, decode_threads: int, threads: int, cores: int, interval: float = 0.5) -> None:
        self.configured = (decode_threads, threads)
        self.cores = cores
        self.interval = interval
        self.current = self.configured
        self._last: tuple[float, float, float] | None = None
        self._disabled = _busy_seconds() is None

    def threads(self) -> tuple[int, int] | None:
        """The threads to use from now on, when they changed since the last call; else ``None``."""
        if self._disabled:
            return None
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.interval:
            return None
        busy, own = _busy_seconds(), _own_seconds()
        if busy is None:
            return None
        last, self._last = self._last, (now, busy, own)
        if last is None:
            return None
        others = max(0.0, (busy - last[1]) - (own - last[2])) / (now - last[0])
        free = max(1, math.floor(self.cores - others + _SLACK))
        wanted = (min(self.configured[0], free), min(self.configured[1], free))
        if wanted == self.current:
            return None
        self.current = wanted
        return wanted
