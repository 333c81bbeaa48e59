"""The durable ledger: one SQLite file (WAL): tenants, sessions, bookings, deployments, replays, responses.

One connection, guarded by a lock. The request path writes through :meth:`Database.run`, which runs
the store call on the ledger's own thread, so a slow disk (a WAL checkpoint, a busy file system) delays
that request only, never the loop and every other stream. The thread takes every call queued since its
last turn and hands their results back to the loop in one wake-up, so a loaded server pays one
thread hop per turn, not one per call (an inference request makes four calls, five with an
``Idempotency-Key``: its lookup runs there too). Left on the loop: the deployment's start/stop row
and the sweeper's booking reads (once a second).
Each write commits before ``run`` returns, and WAL with ``synchronous=NORMAL`` keeps each committed
write across a crash of the process (SIGKILL): a 2xx is sent only after the write it reports is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

__all__ = ["Database"]

P = ParamSpec("P")
R = TypeVar("R")

_Call = tuple[asyncio.AbstractEventLoop, Callable[[], Any], "asyncio.Future[Any]"]
_Result = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _deliver(results: list[_Result]) -> None:
    for future, value, error in results:
        if future.cancelled():
            continue  # its caller gave up waiting; the call itself ran (a write is never half-lost)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class _LedgerThread(threading.Thread):
    """Runs queued calls in order; each turn answers every call it took in one wake-up per loop."""

    def __init__(self) -> None:
        super().__init__(name="ncompass-ledger", daemon=True)
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()

    def run(self) -> None:
        running = True
        while running:
            batch = [self.calls.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 256:
                    batch.append(self.calls.get_nowait())
            answers: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
            for call in batch:
                if call is None:
                    running = False  # close(): the calls queued before it still run
                    continue
                loop, fn, future = call
                try:
                    result: _Result = (future, fn(), None)
                except BaseException as exc:  # handed to the awaiting caller, as run_in_executor does
                    result = (future, None, exc)
                answers.setdefault(loop, []).append(result)
            for loop, results in answers.items():
                with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting
                    loop.call_soon_threadsafe(_deliver, results)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    stopped_at REAL,
    stop_reason TEXT,
    last_seen_at REAL NOT NULL,
    idle_timeout REAL,
    max_duration REAL,
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS sessions_tenant ON sessions (tenant_id, started_at);
CREATE UNIQUE INDEX IF NOT EXISTS sessions_one_active ON sessions (tenant_id) WHERE status = 'active';
CREATE TABLE IF NOT EXISTS bookings (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    start_at REAL NOT NULL,
    end_at REAL NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    cancelled_at REAL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bookings_tenant ON bookings (tenant_id, start_at);
CREATE TABLE IF NOT EXISTS deployments (
    tenant_id TEXT PRIMARY KEY,
    desired TEXT NOT NULL,
    last_request_at REAL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL,
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, route, key)
);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    body TEXT NOT NULL,
    conversation TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class Database:
    """A thread-safe wrapper around one SQLite connection.

    Args:
        path: A file path (its directory is created) or ``":memory:"``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # One thread: the ledger's statements run one after another, in the order they were asked for.
        self._thread = _LedgerThread()
        self._thread.start()
        self._closed = False
        # isolation_level=None: autocommit; multi-statement changes use `transaction()`.
        self._conn = sqlite3.connect(
            path if path == ":memory:" else str(Path(path).expanduser()),
            check_same_thread=False,
            isolation_level=None,
            timeout=30.0,
        )
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows changed."""
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several statements as one atomic change (holds the lock throughout)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn`` (a store call) on the ledger's thread and await its result.

        A call once queued runs even if its caller is cancelled meanwhile.
        """
        if self._closed:
            raise RuntimeError("the ledger is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._thread.calls.put((loop, functools.partial(fn, *args, **kwargs), future))
        return await future

    def close(self) -> None:
        self._closed = True
        if self._thread.is_alive():
            self._thread.calls.put(None)
            self._thread.join()
        with self._lock:
            self._conn.close()
