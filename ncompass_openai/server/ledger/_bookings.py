"""Bookings: keep-warm windows. The deployment manager reads them to start early and not idle-stop."""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

from .._exceptions import InvalidRequest, NotFound
from ._db import Database

__all__ = ["BookingStore"]

_COLUMNS = "id, tenant_id, start_at, end_at, note, cancelled_at, created_at"


def booking_status(row: sqlite3.Row | dict[str, Any], now: float) -> str:
    if row["cancelled_at"] is not None:
        return "cancelled"
    if now < row["start_at"]:
        return "scheduled"
    if now < row["end_at"]:
        return "active"
    return "finished"


class BookingStore:
    """Bookings of every tenant, kept in the ledger.

    Args:
        db: The ledger.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, tenant_id: str, *, start_at: float, end_at: float, note: str) -> dict[str, Any]:
        now = time.time()
        if end_at <= start_at:
            raise InvalidRequest("`end_at` must come after `start_at`.", param="end_at")
        if end_at <= now:
            raise InvalidRequest("`end_at` is in the past: a booking must end in the future.", param="end_at")
        booking_id = "book_" + secrets.token_hex(12)
        self._db.execute(
            "INSERT INTO bookings (id, tenant_id, start_at, end_at, note, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (booking_id, tenant_id, start_at, end_at, note, now),
        )
        return self.get(tenant_id, booking_id)

    def get(self, tenant_id: str, booking_id: str) -> dict[str, Any]:
        row = self._db.fetchone(f"SELECT {_COLUMNS} FROM bookings WHERE id=?", (booking_id,))
        if row is None or row["tenant_id"] != tenant_id:
            raise NotFound(
                f"No booking `{booking_id}` for this API key. List yours with `GET /v1/deployment/bookings`.",
                param="id",
                code="booking_not_found",
            )
        return dict(row)

    def list_for(self, tenant_id: str) -> list[dict[str, Any]]:
        rows = self._db.fetchall(
            f"SELECT {_COLUMNS} FROM bookings WHERE tenant_id=? ORDER BY start_at, rowid", (tenant_id,)
        )
        return [dict(r) for r in rows]

    def cancel(self, tenant_id: str, booking_id: str) -> dict[str, Any]:
        self.get(tenant_id, booking_id)
        self._db.execute(
            "UPDATE bookings SET cancelled_at=? WHERE id=? AND cancelled_at IS NULL",
            (time.time(), booking_id),
        )
        return self.get(tenant_id, booking_id)

    def live_windows(self, now: float) -> list[dict[str, Any]]:
        """Bookings not cancelled and not yet over, of every tenant."""
        rows = self._db.fetchall(
            f"SELECT {_COLUMNS} FROM bookings WHERE cancelled_at IS NULL AND end_at > ?", (now,)
        )
        return [dict(r) for r in rows]

    def last_end(self, tenant_id: str, now: float) -> float | None:
        """The end of the tenant's latest booking that is already over (idle time counts from it)."""
        row = self._db.fetchone(
            "SELECT MAX(end_at) AS e FROM bookings "
            "WHERE tenant_id=? AND cancelled_at IS NULL AND end_at <= ?",
            (tenant_id, now),
        )
        return None if row is None or row["e"] is None else float(row["e"])

    @staticmethod
    def to_json(data: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {
            "id": data["id"],
            "object": "booking",
            "start_at": data["start_at"],
            "end_at": data["end_at"],
            "note": data["note"],
            "status": booking_status(data, now),
        }
