"""Time-billed sessions: one active per tenant, a lease renewed by every request, stops billed exactly.

A session that lapses (its lease runs out past ``idle_timeout``, or it outlives ``max_duration``) is
stopped *at the lapse moment*, whether the sweeper notices it a second later or a restarted server
notices it an hour later: every read applies the lapse first, so billing never runs past it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from typing import Any

from .._exceptions import NotFound
from ._db import Database

__all__ = ["IMPLICIT", "SessionStore", "is_implicit"]

IMPLICIT: dict[str, Any] = {"implicit": True}
"""The metadata of a session the server opened for inference outside a session (reserved key)."""

_COLUMNS = (
    "id, tenant_id, status, started_at, stopped_at, stop_reason, last_seen_at, idle_timeout, "
    "max_duration, requests, prompt_tokens, completion_tokens, metadata"
)


def _lapse(row: sqlite3.Row | dict[str, Any], now: float) -> tuple[float, str] | None:
    """When and why an active session has run out, if it has."""
    candidates: list[tuple[float, str]] = []
    if row["idle_timeout"] is not None:
        candidates.append((row["last_seen_at"] + row["idle_timeout"], "idle_timeout"))
    if row["max_duration"] is not None:
        candidates.append((row["started_at"] + row["max_duration"], "max_duration"))
    due = [c for c in candidates if c[0] <= now]
    return min(due) if due else None


def is_implicit(data: dict[str, Any]) -> bool:
    return bool(json.loads(data["metadata"]).get("implicit"))


class SessionStore:
    """Sessions of every tenant, kept in the ledger.

    Args:
        db: The ledger.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reading --------------------------------------------------------------------------------

    def _settle(self, row: sqlite3.Row | None, now: float) -> dict[str, Any] | None:
        """The row as a dict, with a lapsed active session stopped at its lapse moment first."""
        if row is None:
            return None
        data = dict(row)
        if data["status"] == "active":
            lapse = _lapse(data, now)
            if lapse is not None:
                stop_at, reason = lapse
                changed = self._db.execute(
                    "UPDATE sessions SET status='stopped', stopped_at=?, stop_reason=? "
                    "WHERE id=? AND status='active'",
                    (stop_at, reason, data["id"]),
                )
                if changed:
                    data.update(status="stopped", stopped_at=stop_at, stop_reason=reason)
                else:  # stopped concurrently: read what was written
                    return self._settle(self._row(data["id"]), now)
        return data

    def _row(self, session_id: str) -> sqlite3.Row | None:
        return self._db.fetchone(f"SELECT {_COLUMNS} FROM sessions WHERE id=?", (session_id,))

    def active(self, tenant_id: str, now: float | None = None) -> dict[str, Any] | None:
        now = time.time() if now is None else now
        row = self._db.fetchone(
            f"SELECT {_COLUMNS} FROM sessions WHERE tenant_id=? AND status='active'", (tenant_id,)
        )
        data = self._settle(row, now)
        return data if data is not None and data["status"] == "active" else None

    def get(self, tenant_id: str, session_id: str) -> dict[str, Any]:
        row = self._row(session_id)
        # Another tenant's id answers exactly like an unknown one.
        if row is None or row["tenant_id"] != tenant_id:
            raise NotFound(
                f"No session `{session_id}` for this API key. List yours with `GET /v1/sessions`.",
                param="id",
                code="session_not_found",
            )
        data = self._settle(row, time.time())
        assert data is not None
        return data

    def list_for(self, tenant_id: str, *, status: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        now = time.time()
        self.active(tenant_id, now)  # settle a lapsed session before filtering on status
        sql = f"SELECT {_COLUMNS} FROM sessions WHERE tenant_id=?"
        params: list[Any] = [tenant_id]
        if status is not None:
            sql += " AND status=?"
            params.append(status)
        sql += " ORDER BY started_at DESC, rowid DESC LIMIT ?"
        params.append(limit)
        return [d for d in (self._settle(r, now) for r in self._db.fetchall(sql, params)) if d is not None]

    # -- changing -------------------------------------------------------------------------------

    def start(
        self,
        tenant_id: str,
        *,
        idle_timeout: float | None,
        max_duration: float | None,
        metadata: dict[str, Any],
    ) -> tuple[dict[str, Any], bool]:
        """The tenant's active session, or a new one; the flag says whether it was created.

        An active *implicit* session is stopped at this instant (``stop_reason: "replaced"``) and the new
        one starts at the same instant, so no second is billed twice and the caller's limits apply.
        """
        now = time.time()
        existing = self.active(tenant_id, now)
        if existing is not None and not is_implicit(existing):
            self.touch(tenant_id)
            return existing, False
        replaced = existing["id"] if existing is not None else None
        return self._create(tenant_id, now, now, idle_timeout, max_duration, metadata, replaced=replaced)

    def open_implicit(
        self, tenant_id: str, *, since: float, idle_timeout: float
    ) -> tuple[dict[str, Any], bool]:
        """The session an inference answer is billed to: the active one, else a new implicit one.

        The implicit session starts at ``since`` (when the request arrived), but never before the end of
        the tenant's last session: a second is never billed twice.
        """
        now = time.time()
        existing = self.active(tenant_id, now)
        if existing is not None:
            return existing, False
        row = self._db.fetchone(
            "SELECT COALESCE(MAX(stopped_at), 0) AS last_stop FROM sessions WHERE tenant_id=?", (tenant_id,)
        )
        assert row is not None  # an aggregate always answers one row
        started_at = min(now, max(since, row["last_stop"]))
        return self._create(tenant_id, started_at, now, idle_timeout, None, IMPLICIT)

    def _create(
        self,
        tenant_id: str,
        started_at: float,
        now: float,
        idle_timeout: float | None,
        max_duration: float | None,
        metadata: dict[str, Any],
        *,
        replaced: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """A new active session (stopping ``replaced`` at ``now`` in the same transaction)."""
        session_id = "sess_" + secrets.token_hex(12)
        try:
            with self._db.transaction() as conn:
                if replaced is not None:
                    conn.execute(
                        "UPDATE sessions SET status='stopped', stopped_at=?, stop_reason='replaced' "
                        "WHERE id=? AND status='active'",
                        (now, replaced),
                    )
                conn.execute(
                    "INSERT INTO sessions (id, tenant_id, status, started_at, last_seen_at, idle_timeout, "
                    "max_duration, metadata) VALUES (?, ?, 'active', ?, ?, ?, ?, ?)",
                    (
                        session_id,
                        tenant_id,
                        started_at,
                        now,
                        idle_timeout,
                        max_duration,
                        json.dumps(metadata),
                    ),
                )
        except sqlite3.IntegrityError:
            return self._winner(tenant_id)
        created = self._row(session_id)
        assert created is not None
        return dict(created), True

    def _winner(self, tenant_id: str) -> tuple[dict[str, Any], bool]:
        # A concurrent start won the race: one active session per tenant, answer that one.
        existing = self.active(tenant_id)
        if existing is None:
            raise RuntimeError("a concurrent session start left no active session")
        return existing, False

    def touch(self, tenant_id: str) -> None:
        """Renew the lease of the tenant's active session (if it has not lapsed already)."""
        now = time.time()
        changed = self._db.execute(
            "UPDATE sessions SET last_seen_at=? WHERE tenant_id=? AND status='active' "
            "AND (idle_timeout IS NULL OR last_seen_at + idle_timeout > ?) "
            "AND (max_duration IS NULL OR started_at + max_duration > ?)",
            (now, tenant_id, now, now),
        )
        if not changed:
            self.active(tenant_id, now)  # a lapsed one is stopped at its lapse, not renewed

    def record_usage(
        self, tenant_id: str, session_id: str | None, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Add one request's tokens to the session it was billed to (else the tenant's active one), and
        renew the tenant's lease: a long generation does not lapse the session while it runs."""
        where, params = (
            ("id=?", (session_id,))
            if session_id is not None
            else ("tenant_id=? AND status='active'", (tenant_id,))
        )
        self._db.execute(
            "UPDATE sessions SET requests = requests + 1, prompt_tokens = prompt_tokens + ?, "
            f"completion_tokens = completion_tokens + ? WHERE {where}",
            (prompt_tokens, completion_tokens, *params),
        )
        self.touch(tenant_id)

    def heartbeat(self, tenant_id: str, session_id: str) -> dict[str, Any]:
        data = self.get(tenant_id, session_id)
        if data["status"] == "active":
            self.touch(tenant_id)
            data = self.get(tenant_id, session_id)
        return data

    def stop(self, tenant_id: str, session_id: str) -> dict[str, Any]:
        """Stop a session (a stopped one is answered as it is)."""
        data = self.get(tenant_id, session_id)
        if data["status"] == "active":
            self._db.execute(
                "UPDATE sessions SET status='stopped', stopped_at=?, stop_reason='client' "
                "WHERE id=? AND status='active'",
                (time.time(), session_id),
            )
            data = self.get(tenant_id, session_id)
        return data

    def sweep(self) -> int:
        """Stop every lapsed session at its lapse moment; returns how many were stopped."""
        now = time.time()
        stopped = 0
        for row in self._db.fetchall(f"SELECT {_COLUMNS} FROM sessions WHERE status='active'"):
            data = self._settle(row, now)
            if data is not None and data["status"] == "stopped":
                stopped += 1
        return stopped

    def totals(self) -> dict[str, tuple[int, float]]:
        """Each tenant's open sessions and billed seconds over the whole ledger (open ones up to now)."""
        self.sweep()  # a lapsed session is billed to its lapse, not to now
        now = time.time()
        rows = self._db.fetchall(
            "SELECT tenant_id, SUM(status='active') AS active, "
            "SUM(MAX(0.0, COALESCE(stopped_at, ?) - started_at)) AS billed FROM sessions GROUP BY tenant_id",
            (now,),
        )
        return {r["tenant_id"]: (int(r["active"]), float(r["billed"])) for r in rows}

    @staticmethod
    def to_json(data: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        end = data["stopped_at"] if data["stopped_at"] is not None else now
        return {
            "id": data["id"],
            "object": "session",
            "status": data["status"],
            "started_at": data["started_at"],
            "stopped_at": data["stopped_at"],
            "stop_reason": data["stop_reason"],
            "billed_seconds": round(max(0.0, end - data["started_at"]), 3),
            "idle_timeout": data["idle_timeout"],
            "max_duration": data["max_duration"],
            "requests": data["requests"],
            "usage": {"prompt_tokens": data["prompt_tokens"], "completion_tokens": data["completion_tokens"]},
            "metadata": json.loads(data["metadata"]),
        }
