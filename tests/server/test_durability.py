"""The ledger survives SIGKILL: a restarted server on the same file loses no session and no billed second."""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from _helpers import files_open_by_this_process

from .conftest import ServerProcess

KEY_A = "nc-durable-key-a"
KEY_B = "nc-durable-key-b"


def test_sigkill_and_restart_keeps_every_billed_second(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    args = ("--db", str(tmp_path / "ledger.sqlite3"), "--api-key", KEY_A, "--api-key", KEY_B)
    first = spawn_server(*args, "--log-level", "warning")
    with first.client(KEY_A) as a, first.client(KEY_B) as b:
        long = a.post("/v1/sessions", json={"metadata": {"job": "long"}}, headers={"Idempotency-Key": "s-1"})
        assert long.status_code == 201
        before_b = time.time()
        lapsing = b.post("/v1/sessions", json={"idle_timeout": 1.0})
        after_b = time.time()
        assert lapsing.status_code == 201
        done = a.post("/v1/completions", json={"model": "synthetic", "prompt": "a b", "max_tokens": 3})
        assert done.status_code == 200
        booking = a.post(
            "/v1/deployment/bookings", json={"start_at": time.time() + 3600, "end_at": time.time() + 7200}
        )
        assert booking.status_code == 201
        time.sleep(0.2)
    first.stop(signal.SIGKILL)
    killed_at = time.time()
    time.sleep(1.5)  # B's lease lapses while no server runs

    second = spawn_server(*args, "--log-level", "warning")
    restarted_at = time.time()
    with second.client(KEY_A) as a, second.client(KEY_B) as b:
        kept = a.get(f"/v1/sessions/{long.json()['id']}").json()
        assert kept["status"] == "active"
        assert kept["metadata"] == {"job": "long"}
        assert kept["requests"] == 1 and kept["usage"]["completion_tokens"] == 3
        # Billing ran on through the crash: started before the kill, still counting after the restart.
        assert kept["billed_seconds"] >= restarted_at - long.json()["started_at"] - 0.05
        lapsed = b.get(f"/v1/sessions/{lapsing.json()['id']}").json()
        assert lapsed["status"] == "stopped"
        assert lapsed["stop_reason"] == "idle_timeout"
        # Stopped at the lapse, which fell while the server was down: not at the restart.
        assert before_b + 1.0 <= lapsed["stopped_at"] <= after_b + 1.0
        assert lapsed["stopped_at"] < restarted_at
        assert killed_at < restarted_at
        # The booking and the idempotency record survived as well.
        assert [x["id"] for x in a.get("/v1/deployment/bookings").json()["data"]] == [booking.json()["id"]]
        replay = a.post(
            "/v1/sessions", json={"metadata": {"job": "long"}}, headers={"Idempotency-Key": "s-1"}
        )
        assert replay.status_code == 201 and replay.json()["id"] == long.json()["id"]
        assert len(a.get("/v1/sessions").json()["data"]) == 1


def test_cli_generates_a_key_once_and_keeps_only_its_hash(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    db = tmp_path / "fresh.sqlite3"
    first = spawn_server("--db", str(db))
    exports = dict(re.findall(r"^export (NCOMPASS_\w+)=(\S+)$", first.output(), re.M))
    assert set(exports) == {"NCOMPASS_BASE_URL", "NCOMPASS_API_KEY"}
    assert exports["NCOMPASS_BASE_URL"] == first.base_url  # port 0: the chosen port is printed
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", first.base_url)
    key = exports["NCOMPASS_API_KEY"]
    with first.client(key) as c:
        assert c.get("/v1/models").status_code == 200
    first.stop(signal.SIGKILL)

    stored = db.read_bytes() + (
        db.with_name(db.name + "-wal").read_bytes() if db.with_name(db.name + "-wal").exists() else b""
    )
    assert key.encode() not in stored
    # closing(): a sqlite3 connection's own `with` ends a transaction but leaves the connection open.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        hashes = [row[0] for row in conn.execute("SELECT key_hash FROM tenants")]
    assert hashes == [hashlib.sha256(key.encode()).hexdigest()]
    assert not files_open_by_this_process(db), "the ledger is still open in the test process"

    # A restart on the same ledger serves the same key and prints no new one.
    again = spawn_server("--db", str(db))
    banner = again.output()
    assert "NCOMPASS_API_KEY" not in banner and key not in banner
    assert "already in the ledger" in banner
    with again.client(key) as c:
        assert c.get("/v1/models").status_code == 200
