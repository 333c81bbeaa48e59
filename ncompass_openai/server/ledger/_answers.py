"""The ledger's side of ``Idempotency-Key``: the answers kept for replay, for 24 hours.

The middleware that stores and replays them is ``http/_idempotency.py``.
"""

from __future__ import annotations

import asyncio
import time

from ._db import Database

__all__ = ["RETENTION_SECONDS", "AnswerStore", "Ident", "prune_idempotency"]

RETENTION_SECONDS = 24 * 3600


def prune_idempotency(db: Database) -> int:
    return db.execute("DELETE FROM idempotency WHERE created_at < ?", (time.time() - RETENTION_SECONDS,))


Ident = tuple[str, str, str]  # (tenant id, route, key)
_Row = tuple[int, str, bytes, float]  # (status, headers and fingerprint as JSON, body, created_at)


class AnswerStore:
    """The answers kept for replay: written to the ledger in batches, read from memory until then.

    Writing each answer in its own transaction cost a thread hop and a commit per POST; answers are
    instead queued and written by one flush per turn of the ledger thread, in one transaction, however
    many arrived meanwhile. A lookup sees a queued answer at once. :meth:`drain` writes what is queued
    (the server's shutdown awaits it before closing the ledger).

    Args:
        db: The ledger.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queued: dict[Ident, _Row] = {}
        self._flushing: asyncio.Task[None] | None = None

    async def lookup(self, ident: Ident) -> _Row | None:
        """The answer kept for this key, if it is not older than the retention."""
        row = self._queued.get(ident)
        if row is None:
            # On the ledger's thread, never on the loop: a read there would wait on the ledger's lock
            # for as long as the thread's turn lasts, and stall every other request meanwhile.
            row = await self.db.run(self._read, ident)
            if row is None:
                return None
        return row if row[3] >= time.time() - RETENTION_SECONDS else None

    def _read(self, ident: Ident) -> _Row | None:
        found = self.db.fetchone(
            "SELECT status, headers, body, created_at FROM idempotency "
            "WHERE tenant_id=? AND route=? AND key=?",
            ident,
        )
        if found is None:
            return None
        return (found["status"], found["headers"], bytes(found["body"]), found["created_at"])

    def keep(self, ident: Ident, row: _Row) -> None:
        """Queues an answer; it is visible to :meth:`lookup` from now on."""
        self._queued[ident] = row
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._queued:
            batch = dict(self._queued)
            await self.db.run(self._write, batch)
            for ident, row in batch.items():
                if self._queued.get(ident) is row:
                    del self._queued[ident]

    def _write(self, batch: dict[Ident, _Row]) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO idempotency "
                "(tenant_id, route, key, status, headers, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*ident, *row) for ident, row in batch.items()],
            )

    async def drain(self) -> None:
        """Writes every queued answer."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)
        if self._queued:
            await self._flush()
