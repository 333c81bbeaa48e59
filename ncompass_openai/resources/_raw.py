"""The base of the nCompass resources, and the ``with_raw_response`` view of each: the same methods, each
returning the raw HTTP response (``.headers``, ``.status_code``, ``.parse()``), as openai's resources."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from openai._legacy_response import async_to_raw_response_wrapper, to_raw_response_wrapper
from openai._resource import AsyncAPIResource, SyncAPIResource

if TYPE_CHECKING:
    from .bookings import AsyncBookings, Bookings
    from .deployment import AsyncDeploymentResource, DeploymentResource
    from .sessions import AsyncSessions, Sessions

__all__ = [
    "AsyncBookingsWithRawResponse",
    "AsyncDeploymentResourceWithRawResponse",
    "AsyncResource",
    "AsyncSessionsWithRawResponse",
    "BookingsWithRawResponse",
    "DeploymentResourceWithRawResponse",
    "SessionsWithRawResponse",
    "SyncResource",
]


RawT = TypeVar("RawT")


class SyncResource(SyncAPIResource, Generic[RawT]):
    """openai's resource base, with a typed ``with_raw_response`` (the ``_raw`` view of the subclass)."""

    _raw: ClassVar[type[Any]]

    @cached_property
    def with_raw_response(self) -> RawT:
        """Methods that return the raw HTTP response instead of the parsed object."""
        return cast(RawT, self._raw(self))


class AsyncResource(AsyncAPIResource, Generic[RawT]):
    """openai's async resource base, with a typed ``with_raw_response``."""

    _raw: ClassVar[type[Any]]

    @cached_property
    def with_raw_response(self) -> RawT:
        """Methods that return the raw HTTP response instead of the parsed object."""
        return cast(RawT, self._raw(self))


class BookingsWithRawResponse:
    def __init__(self, bookings: Bookings) -> None:
        self.create = to_raw_response_wrapper(bookings.create)
        self.list = to_raw_response_wrapper(bookings.list)
        self.cancel = to_raw_response_wrapper(bookings.cancel)


class AsyncBookingsWithRawResponse:
    def __init__(self, bookings: AsyncBookings) -> None:
        self.create = async_to_raw_response_wrapper(bookings.create)
        self.list = async_to_raw_response_wrapper(bookings.list)
        self.cancel = async_to_raw_response_wrapper(bookings.cancel)


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


class SessionsWithRawResponse:
    def __init__(self, sessions: Sessions) -> None:
        self.start = to_raw_response_wrapper(sessions.start)
        self.stop = to_raw_response_wrapper(sessions.stop)
        self.retrieve = to_raw_response_wrapper(sessions.retrieve)
        self.list = to_raw_response_wrapper(sessions.list)
        self.heartbeat = to_raw_response_wrapper(sessions.heartbeat)


class AsyncSessionsWithRawResponse:
    def __init__(self, sessions: AsyncSessions) -> None:
        self.start = async_to_raw_response_wrapper(sessions.start)
        self.stop = async_to_raw_response_wrapper(sessions.stop)
        self.retrieve = async_to_raw_response_wrapper(sessions.retrieve)
        self.list = async_to_raw_response_wrapper(sessions.list)
        self.heartbeat = async_to_raw_response_wrapper(sessions.heartbeat)
