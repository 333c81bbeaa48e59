"""The one model-wait poller (``client.deployment.wait_until_running``, the 0.0.x waits, the CLI).

It polls against a monotonic deadline. While the server's ``estimated_ready_at`` lies ahead it waits
half the time left to it (at least ``poll_interval``, at most 15 s), so a long cold start costs few
polls and a pessimistic estimate little waiting; otherwise it backs off from ``poll_interval`` by half
again each time, up to 10 s. A model that is ``stopped`` or ``stopping``, with no booking starting it
before the deadline, fails the wait at once with :class:`ModelNotRunningError` (it would never come up
by itself); ``failed`` raises :class:`DeploymentFailedError` at once. Nothing here does I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

from .._exceptions import DeploymentFailedError, DeploymentTimeoutError, ModelNotRunningError
from ..types import Booking, Deployment

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_WAIT_TIMEOUT",
    "NEEDS_START",
    "STOPPED",
    "AsyncProgressCallback",
    "Poller",
    "ProgressCallback",
    "booking_due",
    "check_wait_args",
    "is_running",
]

DEFAULT_WAIT_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 2.0
_MAX_BACKOFF = 10.0
_MAX_ETA_WAIT = 30.0
NEEDS_START = ("stopped", "stopping", "failed")
STOPPED = ("stopped", "stopping")  # not coming up by itself, unless a booking starts it

ProgressCallback = Callable[[Deployment], object]
AsyncProgressCallback = Callable[[Deployment], object | Awaitable[object]]


def is_running(deployment: Deployment) -> bool:
    return deployment.state == "running" and deployment.ready


def booking_due(bookings: list[Booking], timeout: float | None) -> bool:
    """Whether a booking will have the model started within ``timeout`` seconds from now."""
    horizon = math.inf if timeout is None else time.time() + timeout
    return any(b.status in ("scheduled", "active") and b.start_at <= horizon for b in bookings)


def check_wait_args(timeout: float | None, poll_interval: float) -> None:
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise ValueError(f"timeout must be a number of seconds >= 0 (or None: no deadline), got {timeout!r}.")
    if (
        isinstance(poll_interval, bool)
        or not isinstance(poll_interval, (int, float))
        or not math.isfinite(poll_interval)
        or poll_interval <= 0
    ):
        raise ValueError(f"poll_interval must be a number of seconds > 0, got {poll_interval!r}.")


class Poller:
    """The deadline and the delays of one wait: identical for the sync and the async twin."""

    def __init__(self, timeout: float | None, poll_interval: float) -> None:
        check_wait_args(timeout, poll_interval)
        self.timeout = timeout
        self.poll_interval = float(poll_interval)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.backoff = self.poll_interval
        self.state: str | None = None
        self.start_due: bool | None = None  # a booking starts the model before the deadline (None: not asked)

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def needs_booking_check(self, deployment: Deployment | None) -> bool:
        return deployment is not None and deployment.state in STOPPED and self.start_due is None

    def verdict(self, deployment: Deployment | None) -> float | None:
        """``None`` when running; else the seconds to sleep. Raises when failed or out of time.

        ``deployment`` is ``None`` when the status could not be read (a tolerated error): not running yet.
        """
        if deployment is not None:
            if is_running(deployment):
                return None
            if deployment.state == "failed":
                raise DeploymentFailedError(deployment.error)
            if deployment.state in STOPPED and not self.start_due:
                raise ModelNotRunningError(deployment.state)
            self.state = deployment.state
        remaining = math.inf if self.deadline is None else self.deadline - time.monotonic()
        if remaining <= 0:
            raise DeploymentTimeoutError(self.timeout or 0.0, self.state)
        eta = None if deployment is None else deployment.estimated_ready_at
        until_ready = None if eta is None else eta - time.time()
        if until_ready is not None and until_ready > 0:
            # Halve the way to the estimate each time: few polls on a long start, and an estimate that
            # was pessimistic costs at most half of it.
            delay = max(self.poll_interval, min(until_ready, _MAX_ETA_WAIT) / 2)
        else:
            delay = self.backoff
            self.backoff = min(self.backoff * 1.5, max(_MAX_BACKOFF, self.poll_interval))
        # The last poll lands on the deadline itself, so a model ready just then is still seen.
        return min(delay, remaining)
