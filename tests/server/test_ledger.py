"""The ledger's thread: calls run in the order asked, each caller gets its own result or error."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from ncompass_openai.server.ledger._db import Database

pytestmark = pytest.mark.anyio


def _insert(db: Database, name: str) -> int:
    return db.execute("INSERT INTO meta (name, value) VALUES (?, ?)", (name, name))


def _names(db: Database) -> list[str]:
    return [row["name"] for row in db.fetchall("SELECT name FROM meta ORDER BY rowid")]


async def test_concurrent_calls_run_in_order_and_each_gets_its_result(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "ledger.sqlite3"))
    try:
        names = [f"n{i:03}" for i in range(300)]
        changed = await asyncio.gather(*(db.run(_insert, db, name) for name in names))
        assert changed == [1] * 300
        assert _names(db) == names
        counts = await asyncio.gather(*(db.run(lambda i=i: i * 2) for i in range(50)))
        assert counts == [i * 2 for i in range(50)]
    finally:
        db.close()


async def test_a_failing_call_raises_to_its_caller_only() -> None:
    db = Database(":memory:")
    try:
        first, second, third = await asyncio.gather(
            db.run(_insert, db, "a"),
            db.run(_insert, db, "a"),
            db.run(_insert, db, "b"),
            return_exceptions=True,
        )
        assert first == 1 and third == 1
        assert isinstance(second, sqlite3.IntegrityError)
        assert _names(db) == ["a", "b"]
    finally:
        db.close()


async def test_a_write_whose_caller_gave_up_still_lands() -> None:
    db = Database(":memory:")
    try:
        task = asyncio.ensure_future(db.run(_insert, db, "kept"))
        await asyncio.sleep(0)  # queued
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await db.run(lambda: None)  # a later call: the cancelled one ran before it
        assert _names(db) == ["kept"]
    finally:
        db.close()


async def test_close_runs_what_was_queued_and_refuses_more() -> None:
    db = Database(":memory:")
    pending = [asyncio.ensure_future(db.run(_insert, db, f"q{i}")) for i in range(20)]
    await asyncio.sleep(0)
    db.close()
    assert await asyncio.gather(*pending) == [1] * 20
    with pytest.raises(RuntimeError, match="closed"):
        await db.run(lambda: None)
