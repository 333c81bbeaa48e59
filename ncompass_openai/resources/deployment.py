"""``client.deployment``: the key's model deployment and its slow cold starts (the protocol, "Deployment").

``wait_until_running`` polls against a monotonic deadline. While the server's ``estimated_ready_at``
lies ahead it waits half the time left to it (at least ``poll_interval``, at most 15 s), so a long cold
start costs few polls and a pessimistic estimate little waiting; otherwise it backs off from
``poll_interval`` by half again each time, up to 10 s. A model that is ``stopped`` or ``stopping``, with
no booking starting before the deadline, fails the wait at once with :class:`ModelNotRunningError` (it
would never come up by itself); ``failed`` raises :class:`DeploymentFailedError` at once.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from functools import cached_property

import openai
from openai import NotGiven, not_given
from openai._base_client import make_request_options
from openai._legacy_response import async_to_raw_response_wrapper, to_raw_response_wrapper
from openai._resource import AsyncAPIResource, SyncAPIResource
from openai._types import Body, Headers, Query

from .._compat import httpx
from .._exceptions import DeploymentFailedError, DeploymentTimeoutError, ModelNotRunningError
from ..types import Booking, Deployment
from .bookings import AsyncBookings, Bookings

__all__ = ["AsyncDeploymentResource", "DeploymentResource"]

DEFAULT_WAIT_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 2.0
_MAX_BACKOFF = 10.0
_MAX_ETA_WAIT = 30.0
_NEEDS_START = ("stopped", "stopping", "failed")
_STOPPED = ("stopped", "stopping")  # not coming up by itself, unless a booking starts it

ProgressCallback = Callable[[Deployment], object]
AsyncProgressCallback = Callable[[Deployment], object | Awaitable[object]]


def _is_running(deployment: Deployment) -> bool:
    return deployment.state == "running" and deployment.ready


def _booking_due(bookings: list[Booking], timeout: float | None) -> bool:
    """Whether a booking will have the model started within ``timeout`` seconds from now."""
    horizon = math.inf if timeout is None else time.time() + timeout
    return any(b.status in ("scheduled", "active") and b.start_at <= horizon for b in bookings)


def _check_wait_args(timeout: float | None, poll_interval: float) -> None:
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


class _Poller:
    """The deadline and the delays of one wait: identical for the sync and the async twin."""

    def __init__(self, timeout: float | None, poll_interval: float) -> None:
        _check_wait_args(timeout, poll_interval)
        self.timeout = timeout
        self.poll_interval = float(poll_interval)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.backoff = self.poll_interval
        self.state: str | None = None
        self.start_due: bool | None = None  # a booking starts the model before the deadline (None: not asked)

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def needs_booking_check(self, deployment: Deployment | None) -> bool:
        return deployment is not None and deployment.state in _STOPPED and self.start_due is None

    def verdict(self, deployment: Deployment | None) -> float | None:
        """``None`` when running; else the seconds to sleep. Raises when failed or out of time.

        ``deployment`` is ``None`` when the status could not be read (a tolerated error): not running yet.
        """
        if deployment is not None:
            if _is_running(deployment):
                return None
            if deployment.state == "failed":
                raise DeploymentFailedError(deployment.error)
            if deployment.state in _STOPPED and not self.start_due:
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


class DeploymentResource(SyncAPIResource):
    """Status, start and stop of the key's model, waits for cold starts, and keep-warm bookings."""

    @cached_property
    def bookings(self) -> Bookings:
        """Keep-warm windows."""
        return Bookings(self._client)

    @cached_property
    def with_raw_response(self) -> DeploymentResourceWithRawResponse:
        """Methods that return the raw HTTP response instead of the parsed object."""
        return DeploymentResourceWithRawResponse(self)

    def status(
        self,
        *,
        extra_headers: Headers | None = None,
        extra_query: Query | None = None,
        extra_body: Body | None = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
    ) -> Deployment:
        """Returns the deployment: its state, whether it is ready, when it should be."""
        return self._get(
            "/deployment",
            options=make_request_options(
                extra_headers=extra_headers, extra_query=extra_query, extra_body=extra_body, timeout=timeout
            ),
            cast_to=Deployment,
        )

    def start(
        self,
        *,
        extra_headers: Headers | None = None,
        extra_query: Query | None = None,
        extra_body: Body | None = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
    ) -> Deployment:
        """Starts the model (a cold start takes minutes); returns at once. See ``wait_until_running``."""
        return self._post(
            "/deployment/start",
            body={},
            options=make_request_options(
                extra_headers=extra_headers, extra_query=extra_query, extra_body=extra_body, timeout=timeout
            ),
            cast_to=Deployment,
        )

    def stop(
        self,
        *,
        extra_headers: Headers | None = None,
        extra_query: Query | None = None,
        extra_body: Body | None = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
    ) -> Deployment:
        """Stops the model; inference then answers 503 until it is started again."""
        return self._post(
            "/deployment/stop",
            body={},
            options=make_request_options(
                extra_headers=extra_headers, extra_query=extra_query, extra_body=extra_body, timeout=timeout
            ),
            cast_to=Deployment,
        )

    def is_running(self) -> bool:
        """Whether the model is running and ready to answer (one status request, no waiting)."""
        return _is_running(self.status())

    def _booking_due(self, timeout: float | None) -> bool:
        try:
            return _booking_due(self.bookings.list(), timeout)
        except openai.OpenAIError:
            return False  # unknown: the wait fails fast rather than bill a wait that may never end

    def _before_session(self, timeout: float | None, start_model: bool) -> None:
        """Before a session opens: start the model (``start_model``), or fail now if it cannot come up."""
        deployment = self.status()
        if deployment.state in _NEEDS_START and start_model:
            self.start()
        elif deployment.state in _STOPPED and not self._booking_due(timeout):
            raise ModelNotRunningError(deployment.state)

    def wait_until_running(
        self,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_progress: ProgressCallback | None = None,
    ) -> Deployment:
        """Waits until the model is running and ready; does not start it (see ``ensure_running``).

        Args:
            timeout: Seconds to wait at most (monotonic clock); ``None`` waits without deadline.
            poll_interval: Shortest wait between two status requests, seconds.
            on_progress: Called with every ``Deployment`` seen, e.g. to show a spinner.

        Raises:
            ModelNotRunningError: The model is stopped (or stopping) and no booking starts it before the
                deadline: start it with ``start()`` / ``ensure_running()``.
            DeploymentFailedError: The deployment went to state ``failed``.
            DeploymentTimeoutError: It was not running when the deadline passed.
        """
        return self._wait(timeout, poll_interval, on_progress, tolerate=())

    def _wait(
        self,
        timeout: float | None,
        poll_interval: float,
        on_progress: ProgressCallback | None,
        *,
        tolerate: tuple[type[BaseException], ...],
    ) -> Deployment:
        """The one wait loop (the 0.0.x API tolerates errors that leave the state unknown)."""
        poller = _Poller(timeout, poll_interval)
        while True:
            deployment: Deployment | None = None
            with contextlib.suppress(*tolerate):
                deployment = self.status()
            if poller.needs_booking_check(deployment):
                poller.start_due = self._booking_due(poller.remaining())
            if deployment is not None and on_progress is not None:
                on_progress(deployment)
            delay = poller.verdict(deployment)
            if delay is None:
                assert deployment is not None
                return deployment
            self._sleep(delay)

    def ensure_running(
        self,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_progress: ProgressCallback | None = None,
    ) -> Deployment:
        """Starts the model if it is not running or starting, then waits until it is ready.

        Args:
            timeout: Seconds to wait at most (monotonic clock); ``None`` waits without deadline.
            poll_interval: Shortest wait between two status requests, seconds.
            on_progress: Called with every ``Deployment`` seen.
        """
        _check_wait_args(timeout, poll_interval)
        deployment = self.status()
        if _is_running(deployment):
            if on_progress is not None:
                on_progress(deployment)
            return deployment
        if deployment.state in _NEEDS_START:
            self.start()
        return self.wait_until_running(timeout=timeout, poll_interval=poll_interval, on_progress=on_progress)


class AsyncDeploymentResource(AsyncAPIResource):
    """Status, start and stop of the key's model, waits for cold starts, and keep-warm bookings."""

    @cached_property
    def bookings(self) -> AsyncBookings:
        """Keep-warm windows."""
        return AsyncBookings(self._client)

    @cached_property
    def with_raw_response(self) -> AsyncDeploymentResourceWithRawResponse:
        """Methods that return the raw HTTP response instead of the parsed object."""
        return AsyncDeploymentResourceWithRawResponse(self)

    async def status(
        self,
        *,
        extra_headers: Headers | None = None,
        extra_query: Query | None = None,
        extra_body: Body | None = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
    ) -> Deployment:
        """Returns the deployment: its state, whether it is ready, when it should be."""
        return await self._get(
            "/deployment",
            options=make_request_options(
                extra_headers=extra_headers, extra_query=extra_query, extra_body=extra_body, timeout=timeout
            ),
            cast_to=Deployment,
        )

    async def start(
        self,
        *,
        extra_headers: Headers | None = None,
        extra_query: Query | None = None,
        extra_body: Body | None = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
    ) -> Deployment:
        """Starts the model (a cold start takes minutes); returns at once. See ``wait_until_running``."""
        return await self._post(
            "/deployment/start",
            body={},
            options=make_request_options(
                extra_headers=extra_headers, extra_query=extra_query, extra_body=extra_body, timeout=timeout
            ),
            cast_to=Deployment,
        )

    async def stop(
        self,
        *,
        extra_headers: Headers | None = None,
        extra_query: Query | None = None,
        extra_body: Body | None = None,
        timeout: float | httpx.Timeout | NotGiven | None = not_given,
    ) -> Deployment:
        """Stops the model; inference then answers 503 until it is started again."""
        return await self._post(
            "/deployment/stop",
            body={},
            options=make_request_options(
                extra_headers=extra_headers, extra_query=extra_query, extra_body=extra_body, timeout=timeout
            ),
            cast_to=Deployment,
        )

    async def is_running(self) -> bool:
        """Whether the model is running and ready to answer (one status request, no waiting)."""
        return _is_running(await self.status())

    async def _booking_due(self, timeout: float | None) -> bool:
        try:
            return _booking_due(await self.bookings.list(), timeout)
        except openai.OpenAIError:
            return False  # unknown: the wait fails fast rather than bill a wait that may never end

    async def _before_session(self, timeout: float | None, start_model: bool) -> None:
        """Before a session opens: start the model (``start_model``), or fail now if it cannot come up."""
        deployment = await self.status()
        if deployment.state in _NEEDS_START and start_model:
            await self.start()
        elif deployment.state in _STOPPED and not await self._booking_due(timeout):
            raise ModelNotRunningError(deployment.state)

    async def wait_until_running(
        self,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_progress: AsyncProgressCallback | None = None,
    ) -> Deployment:
        """Waits until the model is running and ready; does not start it (see ``ensure_running``).

        Args:
            timeout: Seconds to wait at most (monotonic clock); ``None`` waits without deadline.
            poll_interval: Shortest wait between two status requests, seconds.
            on_progress: Called with every ``Deployment`` seen (a coroutine function is awaited).

        Raises:
            ModelNotRunningError: The model is stopped (or stopping) and no booking starts it before the
                deadline: start it with ``start()`` / ``ensure_running()``.
            DeploymentFailedError: The deployment went to state ``failed``.
            DeploymentTimeoutError: It was not running when the deadline passed.
        """
        return await self._wait(timeout, poll_interval, on_progress, tolerate=())

    async def _wait(
        self,
        timeout: float | None,
        poll_interval: float,
        on_progress: AsyncProgressCallback | None,
        *,
        tolerate: tuple[type[BaseException], ...],
    ) -> Deployment:
        """The one wait loop (the 0.0.x API tolerates errors that leave the state unknown)."""
        poller = _Poller(timeout, poll_interval)
        while True:
            deployment: Deployment | None = None
            with contextlib.suppress(*tolerate):
                deployment = await self.status()
            if poller.needs_booking_check(deployment):
                poller.start_due = await self._booking_due(poller.remaining())
            if deployment is not None and on_progress is not None:
                result = on_progress(deployment)
                if isinstance(result, Awaitable):
                    await result
            delay = poller.verdict(deployment)
            if delay is None:
                assert deployment is not None
                return deployment
            await self._sleep(delay)

    async def ensure_running(
        self,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_progress: AsyncProgressCallback | None = None,
    ) -> Deployment:
        """Starts the model if it is not running or starting, then waits until it is ready.

        Args:
            timeout: Seconds to wait at most (monotonic clock); ``None`` waits without deadline.
            poll_interval: Shortest wait between two status requests, seconds.
            on_progress: Called with every ``Deployment`` seen (a coroutine function is awaited).
        """
        _check_wait_args(timeout, poll_interval)
        deployment = await self.status()
        if _is_running(deployment):
            if on_progress is not None:
                result = on_progress(deployment)
                if isinstance(result, Awaitable):
                    await result
            return deployment
        if deployment.state in _NEEDS_START:
            await self.start()
        return await self.wait_until_running(
            timeout=timeout, poll_interval=poll_interval, on_progress=on_progress
        )


class DeploymentResourceWithRawResponse:
    def __init__(self, deployment: DeploymentResource) -> None:
        self.status = to_raw_response_wrapper(deployment.status)
        self.start = to_raw_response_wrapper(deployment.start)
        self.stop = to_raw_response_wrapper(deployment.stop)


class AsyncDeploymentResourceWithRawResponse:
    def __init__(self, deployment: AsyncDeploymentResource) -> None:
        self.status = async_to_raw_response_wrapper(deployment.status)
        self.start = async_to_raw_response_wrapper(deployment.start)
        self.stop = async_to_raw_response_wrapper(deployment.stop)
