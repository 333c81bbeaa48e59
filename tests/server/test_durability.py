"""The ledger survives SIGKILL: a restarted server on the same file loses no session and no billed second."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncompass_openai._compat import httpx

KEY_A = "nc-durable-key-a"
KEY_B = "nc-durable-key-b"


class _Proc:
    def __init__(self, db: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "ncompass_openai.server",
                "--engine",
                "synthetic",
                "--port",
                "0",
                "--db",
                str(db),
                "--api-key",
                KEY_A,
                "--api-key",
                KEY_B,
                "--log-level",
                "warning",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("server exited: " + "".join(self.lines))
            self.lines.append(line)
            match = re.search(r"listening on (http://\S+/v1)", line)
            if match:
                self.base_url = match.group(1)
                self.url = self.base_url.removesuffix("/v1")
                break
        else:
            raise AssertionError("server did not print its address")
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def procs() -> Iterator[list[_Proc]]:
    started: list[_Proc] = []
    yield started
    for p in started:
        p.kill()


def test_sigkill_and_restart_keeps_every_billed_second(tmp_path: Path, procs: list[_Proc]) -> None:
    db = tmp_path / "ledger.sqlite3"
    first = _Proc(db)
    procs.append(first)
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
    first.kill()
    killed_at = time.time()
    time.sleep(1.5)  # B's lease lapses while no server runs

    second = _Proc(db)
    procs.append(second)
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


def test_cli_generates_a_key_once_and_keeps_only_its_hash(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "fresh.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "ncompass_openai.server",
            "--engine",
            "synthetic",
            "--port",
            "0",
            "--db",
            str(db),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
        exports = dict(re.findall(r"^export (NCOMPASS_\w+)=(\S+)$", "".join(lines), re.M))
        assert set(exports) == {"NCOMPASS_BASE_URL", "NCOMPASS_API_KEY"}
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", exports["NCOMPASS_BASE_URL"])
        assert not exports["NCOMPASS_BASE_URL"].endswith(":0/v1")  # port 0: the chosen port is printed
        key = exports["NCOMPASS_API_KEY"]
        url = exports["NCOMPASS_BASE_URL"]
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(url + "/models", headers={"Authorization": f"Bearer {key}"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    stored = db.read_bytes() + (
        db.with_name(db.name + "-wal").read_bytes() if db.with_name(db.name + "-wal").exists() else b""
    )
    assert key.encode() not in stored
    with sqlite3.connect(db) as conn:
        hashes = [row[0] for row in conn.execute("SELECT key_hash FROM tenants")]
    import hashlib

    assert hashes == [hashlib.sha256(key.encode()).hexdigest()]

    # A restart on the same ledger serves the same key and prints no new one.
    again = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "ncompass_openai.server",
            "--engine",
            "synthetic",
            "--port",
            "0",
            "--db",
            str(db),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert again.stdout is not None
        banner = "".join(again.stdout.readline() for _ in range(4))
        assert "NCOMPASS_API_KEY" not in banner and key not in banner
        assert "already in the ledger" in banner
        url = re.findall(r"^export NCOMPASS_BASE_URL=(\S+)$", banner, re.M)[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(url + "/models", headers={"Authorization": f"Bearer {key}"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.status_code == 200
    finally:
        again.send_signal(signal.SIGKILL)
        again.wait(timeout=10)
        if again.stdout is not None:
            again.stdout.close()
