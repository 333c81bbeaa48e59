"""``client.deployment.bookings``: keep-warm windows (the protocol, "Bookings").

Times are datetimes or unix times (seconds). A naive datetime (no ``tzinfo``) is read as local time,
as ``datetime.timestamp()`` reads it; pass an aware datetime to be explicit. ``end_at`` must follow
``start_at`` and lie in the future: that is checked here, before any request.
"""

from __future__ import annotations

import builtins
import time
from datetime import datetime

from typing_extensions import Unpack

from .._time import TimeLike, to_unix
from ..types import Booking, BookingList
from ._common import RequestOptions, check_id, path_id, request_options
from ._raw import AsyncBookingsWithRawResponse, AsyncResource, BookingsWithRawResponse, SyncResource

__all__ = ["AsyncBookings", "BookingList", "Bookings", "TimeLike", "to_unix"]


def _create_body(start_at: object, end_at: object, note: object) -> dict[str, object]:
    start = to_unix(start_at, "start_at")
    end = to_unix(end_at, "end_at")
    if not isinstance(note, str):
        raise TypeError(f"note must be a string, got {type(note).__name__}.")
    if end <= start:
        raise ValueError(
            f"end_at ({_show(end)}) must be after start_at ({_show(start)}): a booking is a window of time."
        )
    if end <= time.time():
        raise ValueError(f"end_at ({_show(end)}) is in the past: a booking must end in the future.")
    return {"start_at": start, "end_at": end, "note": note}


def _show(unix: float) -> str:
    return datetime.fromtimestamp(unix).astimezone().isoformat(timespec="seconds")


class Bookings(SyncResource["BookingsWithRawResponse"]):
    """Book, list and cancel keep-warm windows for the key's model."""

    _raw = BookingsWithRawResponse

    def create(
        self,
        *,
        start_at: TimeLike,
        end_at: TimeLike,
        note: str = "",
        **options: Unpack[RequestOptions],
    ) -> Booking:
        """Books a window in which the model is kept running (started early enough to be ready).

        Args:
            start_at: When the model must be ready: a datetime (naive: local time), unix seconds, or ISO
                8601.
            end_at: When the window ends; after ``start_at`` and in the future.
            note: Free text stored with the booking.
            **options: Per-request ``extra_headers``, ``extra_query``, ``extra_body``, ``timeout``.
        """
        return self._post(
            "/deployment/bookings",
            body=_create_body(start_at, end_at, note),
            options=request_options(options),
            cast_to=Booking,
        )

    def list(self, **options: Unpack[RequestOptions]) -> builtins.list[Booking]:
        """Lists the key's bookings, soonest first."""
        page = self._get(
            "/deployment/bookings",
            options=request_options(options),
            cast_to=BookingList,
        )
        return page.data if isinstance(page, BookingList) else page  # a raw response passes through

    def cancel(self, id: str, **options: Unpack[RequestOptions]) -> Booking:
        """Cancels a booking."""
        return self._delete(
            f"/deployment/bookings/{path_id(check_id('id', id, 'book_'))}",
            options=request_options(options),
            cast_to=Booking,
        )


class AsyncBookings(AsyncResource["AsyncBookingsWithRawResponse"]):
    """Book, list and cancel keep-warm windows for the key's model."""

    _raw = AsyncBookingsWithRawResponse

    async def create(
        self,
        *,
        start_at: TimeLike,
        end_at: TimeLike,
        note: str = "",
        **options: Unpack[RequestOptions],
    ) -> Booking:
        """Books a window in which the model is kept running (started early enough to be ready).

        Args:
            start_at: When the model must be ready: a datetime (naive: local time), unix seconds, or ISO
                8601.
            end_at: When the window ends; after ``start_at`` and in the future.
            note: Free text stored with the booking.
            **options: Per-request ``extra_headers``, ``extra_query``, ``extra_body``, ``timeout``.
        """
        return await self._post(
            "/deployment/bookings",
            body=_create_body(start_at, end_at, note),
            options=request_options(options),
            cast_to=Booking,
        )

    async def list(self, **options: Unpack[RequestOptions]) -> builtins.list[Booking]:
        """Lists the key's bookings, soonest first."""
        page = await self._get(
            "/deployment/bookings",
            options=request_options(options),
            cast_to=BookingList,
        )
        return page.data if isinstance(page, BookingList) else page  # a raw response passes through

    async def cancel(self, id: str, **options: Unpack[RequestOptions]) -> Booking:
        """Cancels a booking."""
        return await self._delete(
            f"/deployment/bookings/{path_id(check_id('id', id, 'book_'))}",
            options=request_options(options),
            cast_to=Booking,
        )
