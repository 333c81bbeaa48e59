"""``client.deployment``: the key's model deployment and its slow cold starts (the protocol, "Deployment").

Waiting for a cold start is the one poller's (``_wait.py``): the resources only send its requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from functools import cached_property

import openai
from typing_extensions import Unpack

from .._exceptions import ModelNotRunningError
from ..types import Deployment
from ._common import RequestOptions, request_options
from ._raw import (
    AsyncDeploymentResourceWithRawResponse,
    AsyncResource,
    DeploymentResourceWithRawResponse,
    SyncResource,
)
from ._wait import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    NEEDS_START,
    STOPPED,
    AsyncProgressCallback,
    Poller,
    ProgressCallback,
    booking_due,
    check_wait_args,
    is_running,
)
from .bookings import AsyncBookings, Bookings

__all__ = ["AsyncDeploymentResource", "DeploymentResource"]


class DeploymentResource(SyncResource["DeploymentResourceWithRawResponse"]):
    """Status, start and stop of the key's model, waits for cold starts, and keep-warm bookings."""

    _raw = DeploymentResourceWithRawResponse

    @cached_property
    def bookings(self) -> Bookings:
        """Keep-warm windows."""
        return Bookings(self._client)

    def status(self, **options: Unpack[RequestOptions]) -> Deployment:
        """Returns the deployment: its state, whether it is ready, when it should be."""
        return self._get(
            "/deployment",
            options=request_options(options),
            cast_to=Deployment,
        )

    def start(self, **options: Unpack[RequestOptions]) -> Deployment:
        """Starts the model (a cold start takes minutes); returns at once. See ``wait_until_running``."""
        return self._post(
            "/deployment/start",
            body={},
            options=request_options(options),
            cast_to=Deployment,
        )

    def stop(self, **options: Unpack[RequestOptions]) -> Deployment:
        """Stops the model; inference then answers 503 until it is started again."""
        return self._post(
            "/deployment/stop",
            body={},
            options=request_options(options),
            cast_to=Deployment,
        )

    def is_running(self) -> bool:
        """Whether the model is running and ready to answer (one status request, no waiting)."""
        return is_running(self.status())

    def _booking_due(self, timeout: float | None) -> bool:
        try:
            return booking_due(self.bookings.list(), timeout)
        except openai.OpenAIError:
            return False  # unknown: the wait fails fast rather than bill a wait that may never end

    def _before_session(self, timeout: float | None, start_model: bool) -> None:
        """Before a session opens: start the model (``start_model``), or fail now if it cannot come up."""
        deployment = self.status()
        if deployment.state in NEEDS_START and start_model:
            self.start()
        elif deployment.state in STOPPED and not self._booking_due(timeout):
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
        poller = Poller(timeout, poll_interval)
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
        check_wait_args(timeout, poll_interval)
        deployment = self.status()
        if is_running(deployment):
            if on_progress is not None:
                on_progress(deployment)
            return deployment
        if deployment.state in NEEDS_START:
            self.start()
        return self.wait_until_running(timeout=timeout, poll_interval=poll_interval, on_progress=on_progress)


class AsyncDeploymentResource(AsyncResource["AsyncDeploymentResourceWithRawResponse"]):
    """Status, start and stop of the key's model, waits for cold starts, and keep-warm bookings."""

    _raw = AsyncDeploymentResourceWithRawResponse

    @cached_property
    def bookings(self) -> AsyncBookings:
        """Keep-warm windows."""
        return AsyncBookings(self._client)

    async def status(self, **options: Unpack[RequestOptions]) -> Deployment:
        """Returns the deployment: its state, whether it is ready, when it should be."""
        return await self._get(
            "/deployment",
            options=request_options(options),
            cast_to=Deployment,
        )

    async def start(self, **options: Unpack[RequestOptions]) -> Deployment:
        """Starts the model (a cold start takes minutes); returns at once. See ``wait_until_running``."""
        return await self._post(
            "/deployment/start",
            body={},
            options=request_options(options),
            cast_to=Deployment,
        )

    async def stop(self, **options: Unpack[RequestOptions]) -> Deployment:
        """Stops the model; inference then answers 503 until it is started again."""
        return await self._post(
            "/deployment/stop",
            body={},
            options=request_options(options),
            cast_to=Deployment,
        )

    async def is_running(self) -> bool:
        """Whether the model is running and ready to answer (one status request, no waiting)."""
        return is_running(await self.status())

    async def _booking_due(self, timeout: float | None) -> bool:
        try:
            return booking_due(await self.bookings.list(), timeout)
        except openai.OpenAIError:
            return False  # unknown: the wait fails fast rather than bill a wait that may never end

    async def _before_session(self, timeout: float | None, start_model: bool) -> None:
        """Before a session opens: start the model (``start_model``), or fail now if it cannot come up."""
        deployment = await self.status()
        if deployment.state in NEEDS_START and start_model:
            await self.start()
        elif deployment.state in STOPPED and not await self._booking_due(timeout):
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
        poller = Poller(timeout, poll_interval)
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
        check_wait_args(timeout, poll_interval)
        deployment = await self.status()
        if is_running(deployment):
            if on_progress is not None:
                result = on_progress(deployment)
                if isinstance(result, Awaitable):
                    await result
            return deployment
        if deployment.state in NEEDS_START:
            await self.start()
        return await self.wait_until_running(
            timeout=timeout, poll_interval=poll_interval, on_progress=on_progress
        )
