"""Batch jobs (``client.run_batch``, ``ncompass batch run``) against the local server over real sockets.

The servers run the synthetic engine, paced where a test needs requests to stay in flight; the runs
that kill, interrupt and resume a job are real ``ncompass batch run`` subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import wait_for
from ncompass_openai import AsyncNCompass, NCompass
from ncompass_openai.batch import (
    AutoConcurrency,
    BatchInputError,
    BatchProgress,
    BatchSummary,
    FixedConcurrency,
    ProgressReporter,
)
from ncompass_openai.server import LocalServer
from ncompass_openai.server.engines.synthetic import SyntheticEngine

KEY = "nc-test-batch-key-0123456789"
NCOMPASS = str(Path(sys.executable).parent / "ncompass")


def _server(**overrides: Any) -> LocalServer:
    engine = overrides.pop("engine_instance", None)
    values: dict[str, Any] = {
        "engine": "synthetic",
        "api_keys": [KEY],
        "db": ":memory:",
        "sweep_interval": 0.05,
    }
    values.update(overrides)
    return LocalServer(engine_instance=engine, **values)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with _server(max_queue_per_key=64) as srv:
        yield srv


@pytest.fixture(scope="module")
def paced() -> Iterator[LocalServer]:
    """A slow deployment (20 ms per decoding step, 4 wide): requests stay in flight long enough to kill."""
    with _server(engine_instance=SyntheticEngine(max_batch=4, delay=0.02), max_queue_per_key=16) as srv:
        yield srv


def _lines(n: int, *, max_tokens: int = 4, start: int = 0) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for i in range(start, start + n):
        if i % 2:
            url, body = "/v1/completions", {"prompt": f"prompt {i}", "max_tokens": max_tokens}
        else:
            messages = [{"role": "user", "content": f"question {i}"}]
            url, body = "/v1/chat/completions", {"messages": messages, "max_tokens": max_tokens}
        lines.append({"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body})
    return lines


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sessions(srv: LocalServer) -> list[Any]:
    with NCompass(api_key=KEY, base_url=srv.base_url) as client:
        return client.sessions.list()


def _stop_active(srv: LocalServer) -> None:
    with NCompass(api_key=KEY, base_url=srv.base_url) as client:
        for session in client.sessions.list(status="active"):
            client.sessions.stop(session.id)


def _cli(srv: LocalServer, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=KEY, NCOMPASS_BASE_URL=srv.base_url)
    return subprocess.Popen(
        [NCOMPASS, "batch", "run", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# ---------------------------------------------------------------------------------------------------
# A complete run


def test_complete_run_one_session(server: LocalServer, tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", _lines(40))
    out = tmp_path / "out.jsonl"
    with NCompass(api_key=KEY, base_url=server.base_url) as client:
        summary = client.run_batch(source, output=out, concurrency=8)
        session = client.sessions.retrieve(summary.session_id or "")
    assert isinstance(summary, BatchSummary) and summary.ok
    assert (summary.total, summary.succeeded, summary.failed, summary.skipped) == (40, 40, 0, 0)
    records = _read(out)
    assert sorted(r["custom_id"] for r in records) == sorted(f"req-{i}" for i in range(40))
    for record in records:
        assert set(record) == {"id", "custom_id", "response", "error"} and record["error"] is None
        assert record["id"].startswith("batch_req_")
        assert record["response"]["status_code"] == 200
        body = record["response"]["body"]
        assert record["response"]["request_id"] == body["id"]
        assert body["object"] in ("chat.completion", "text_completion")
        assert body["usage"]["completion_tokens"] == 4
    assert summary.completion_tokens == 160
    assert summary.prompt_tokens == sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in records)
    # One session of its own, stopped at the end, billed what the summary says; every request in it.
    assert session.status == "stopped" and session.stop_reason == "client"
    assert session.metadata == {"batch_job": summary.job_id}
    assert session.requests == 40 and summary.billed_seconds == session.billed_seconds
    assert not (tmp_path / "out.errors.jsonl").read_text()
    assert json.loads((tmp_path / "out.jsonl.job.json").read_text())["job_id"] == summary.job_id


@pytest.mark.anyio
async def test_async_entry_point_with_python_items(server: LocalServer, tmp_path: Path) -> None:
    items: list[object] = [
        "a prompt",
        [{"role": "user", "content": "a chat"}],
        {
            "custom_id": "mine",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "x"}]},
        },
    ]
    seen: list[BatchProgress] = []

    class Recorder(ProgressReporter):
        def update(self, progress: BatchProgress) -> None:
            seen.append(progress)

        def finish(self, summary: BatchSummary) -> None:
            seen.append(summary)  # type: ignore[arg-type]

    async with AsyncNCompass(api_key=KEY, base_url=server.base_url) as client:
        summary = await client.run_batch(
            items, output=tmp_path / "out.jsonl", defaults={"max_tokens": 3}, reporter=Recorder()
        )
    assert summary.ok and summary.succeeded == 3
    by_id = {r["custom_id"]: r["response"]["body"] for r in _read(tmp_path / "out.jsonl")}
    assert set(by_id) == {"request-1", "request-2", "mine"}
    assert by_id["request-1"]["object"] == "text_completion"
    assert by_id["request-1"]["usage"]["completion_tokens"] == 3
    assert by_id["request-2"]["object"] == "chat.completion"
    assert seen and seen[-1] is summary


def test_generator_input_is_streamed(server: LocalServer, tmp_path: Path) -> None:
    pulled: list[int] = []

    def prompts() -> Iterator[str]:
        for i in range(30):
            pulled.append(i)
            yield f"prompt {i}"

    with NCompass(api_key=KEY, base_url=server.base_url) as client:
        summary = client.run_batch(
            prompts(), output=tmp_path / "out.jsonl", defaults={"max_tokens": 2}, concurrency=4
        )
    assert summary.ok and summary.total == 30 and len(_read(tmp_path / "out.jsonl")) == 30


# ---------------------------------------------------------------------------------------------------
# Bad input: one error naming the line, before any request and any session


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"method": "POST", "url": "/v1/completions", "body": {}}', '"custom_id" is missing'),
        ('{"custom_id": "x", "body": {}}', '"url" is missing'),
        ('{"custom_id": "x", "url": "/v1/embeddings", "body": {}}', "unknown \"url\" '/v1/embeddings'"),
        ('{"custom_id": "x", "url": "/v1/completions"}', '"body" is missing'),
        ('{"custom_id": "x", "url": "/v1/completions", "body": "hi"}', '"body" must be a JSON object'),
        (
            '{"custom_id": "x", "method": "GET", "url": "/v1/completions", "body": {}}',
            '"method" must be "POST"',
        ),
        ('{"custom_id": "req-0", "url": "/v1/completions", "body": {}}', "custom_id 'req-0' repeats"),
    ],
)
def test_bad_line_refused_before_anything_is_sent(
    server: LocalServer, tmp_path: Path, line: str, message: str
) -> None:
    _stop_active(server)
    before = len(_sessions(server))
    source = _write(tmp_path / "in.jsonl", [*_lines(2), line, *_lines(1, start=5)])
    with NCompass(api_key=KEY, base_url=server.base_url) as client, pytest.raises(BatchInputError) as caught:
        client.run_batch(source, output=tmp_path / "out.jsonl")
    assert str(caught.value).startswith("line 3: ")
    assert message in str(caught.value) and caught.value.line == 3
    assert len(_sessions(server)) == before  # no session started
    assert not (tmp_path / "out.jsonl").exists()
    proc = _cli(server, str(source), "-o", str(tmp_path / "cli.jsonl"))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert "line 3: " in stderr and message in stderr and "nothing was sent" in stderr
    assert len(_sessions(server)) == before


def test_bad_python_item_names_its_number(server: LocalServer, tmp_path: Path) -> None:
    with NCompass(api_key=KEY, base_url=server.base_url) as client:
        with pytest.raises(BatchInputError, match=r"^item 2: expected a prompt"):
            client.run_batch(["ok", 42], output=tmp_path / "out.jsonl")
        with pytest.raises(ValueError, match="concurrency must be 'auto' or a positive integer"):
            client.run_batch(["ok"], output=tmp_path / "out.jsonl", concurrency=0)


# ---------------------------------------------------------------------------------------------------
# Failing for good, 429s, resume


def test_failed_request_goes_to_errors_and_job_goes_on(server: LocalServer, tmp_path: Path) -> None:
    bad = {"custom_id": "bad", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": -1}}
    source = _write(tmp_path / "in.jsonl", [*_lines(5), bad, *_lines(5, start=5)])
    proc = _cli(server, str(source), "-o", str(tmp_path / "out.jsonl"), "--json")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    summary = json.loads(stdout)
    assert (summary["succeeded"], summary["failed"], summary["ok"]) == (10, 1, False)
    (error,) = _read(tmp_path / "out.errors.jsonl")
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "max_tokens"
    assert (
        error["error"]["code"] == error["response"]["body"]["error"]["code"]
        or error["error"]["code"] == "http_400"
    )
    assert len(_read(tmp_path / "out.jsonl")) == 10
    # Running it again retries the failed one only (it fails again) and skips the answered ones.
    proc = _cli(server, str(source), "-o", str(tmp_path / "out.jsonl"), "--json")
    stdout, stderr = proc.communicate(timeout=60)
    again = json.loads(stdout)
    assert (again["succeeded"], again["failed"], again["skipped"], proc.returncode) == (0, 1, 10, 1)
    assert len(_read(tmp_path / "out.errors.jsonl")) == 1


def test_an_error_not_of_a_request_stops_the_job_and_its_session(server: LocalServer, tmp_path: Path) -> None:
    class Broken(ProgressReporter):
        def update(self, progress: BatchProgress) -> None:
            raise RuntimeError("the reporter broke")

    _stop_active(server)
    with NCompass(api_key=KEY, base_url=server.base_url) as client:
        with pytest.raises(RuntimeError, match="the reporter broke"):
            client.run_batch(_lines(40), output=tmp_path / "out.jsonl", reporter=Broken(), concurrency=4)
        assert client.sessions.list(status="active") == []
    assert len(_read(tmp_path / "out.jsonl")) < 40


def test_429s_are_honoured_and_the_cap_is_learned(tmp_path: Path) -> None:
    engine = SyntheticEngine(max_batch=4, delay=0.005)
    with _server(engine_instance=engine, max_queue_per_key=3) as srv:
        source = _write(tmp_path / "in.jsonl", _lines(40))
        with NCompass(api_key=KEY, base_url=srv.base_url) as client:
            fixed = client.run_batch(source, output=tmp_path / "fixed.jsonl", concurrency=12)
            auto = client.run_batch(source, output=tmp_path / "auto.jsonl")
    assert fixed.ok and fixed.succeeded == 40
    assert auto.ok and auto.succeeded == 40 and auto.concurrency <= 3  # NCompass-Max-In-Flight: 3


def test_replays_answers_the_server_holds_and_new_job_runs_afresh(
    server: LocalServer, tmp_path: Path
) -> None:
    source = _write(tmp_path / "in.jsonl", _lines(12))
    out = tmp_path / "out.jsonl"
    with NCompass(api_key=KEY, base_url=server.base_url) as client:
        first = client.run_batch(source, output=out)
        kept = _read(out)
        # A run killed after the server answered, before these were written: drop half the output.
        out.write_text("".join(json.dumps(r) + "\n" for r in kept[:6]) + '{"id": "cut sho')
        resumed = client.run_batch(source, output=out)
        fresh = client.run_batch(source, output=tmp_path / "other.jsonl")
        sessions = {s.id: s for s in client.sessions.list()}
    assert (resumed.skipped, resumed.succeeded, resumed.job_id) == (6, 6, first.job_id)
    assert sessions[resumed.session_id or ""].requests == 0  # all six replayed: nothing generated again
    after = _read(out)
    assert len(after) == 12 and len({r["custom_id"] for r in after}) == 12
    bodies = {r["custom_id"]: r["response"]["body"] for r in kept}
    for record in after[6:]:
        assert record["response"]["body"] == bodies[record["custom_id"]]
    assert fresh.job_id != first.job_id and sessions[fresh.session_id or ""].requests == 12


def _answered(path: Path) -> list[str]:
    return [r["custom_id"] for r in _read(path)]


def test_sigkill_then_resume_answers_each_once(paced: LocalServer, tmp_path: Path) -> None:
    n = 48
    source = _write(tmp_path / "in.jsonl", _lines(n, max_tokens=8))
    out = tmp_path / "out.jsonl"
    proc = _cli(paced, str(source), "-o", str(out), "--concurrency", "4", "--json")
    assert wait_for(lambda: len(_answered(out)) >= 12, timeout=60)
    proc.kill()
    proc.communicate(timeout=30)
    killed_session = next(s for s in _sessions(paced) if s.status == "active")
    proc = _cli(paced, str(source), "-o", str(out), "--concurrency", "4", "--json")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    answered = _answered(out)
    assert sorted(answered) == sorted(f"req-{i}" for i in range(n))  # each exactly once
    assert summary["skipped"] + summary["succeeded"] == n
    # The resumed run adopted the killed run's session (the same job's), and stopped it at the end.
    assert summary["session_id"] == killed_session.id and summary["session_stopped"]
    session = {s.id: s for s in _sessions(paced)}[killed_session.id]
    assert session.status == "stopped" and session.idle_timeout == 120
    assert session.requests <= n + 4  # at most the four in flight at the kill ran twice


def test_a_session_of_someone_else_is_used_and_left_open(server: LocalServer, tmp_path: Path) -> None:
    _stop_active(server)
    with NCompass(api_key=KEY, base_url=server.base_url) as client, client.session() as mine:
        summary = client.run_batch(_lines(3), output=tmp_path / "out.jsonl")
        assert summary.session_id == mine.id and not summary.session_stopped
        assert client.sessions.retrieve(mine.id).status == "active"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_session(paced: LocalServer, tmp_path: Path, sig: signal.Signals) -> None:
    source = _write(tmp_path / "in.jsonl", _lines(60, max_tokens=8))
    out = tmp_path / "out.jsonl"
    proc = _cli(paced, str(source), "-o", str(out), "--concurrency", "4", "--json")
    assert wait_for(lambda: len(_answered(out)) >= 4, timeout=60)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and summary["billed_seconds"] is not None
    session = {s.id: s for s in _sessions(paced)}[summary["session_id"]]
    assert session.status == "stopped" and session.stop_reason == "client"
    assert summary["succeeded"] == len(_answered(out)) < 60


def test_progress_lines_when_stderr_is_not_a_terminal(server: LocalServer, tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", _lines(6))
    proc = _cli(server, str(source), "-o", str(tmp_path / "out.jsonl"))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout == ""
    assert "batch: 6 requests" in stderr and "6 answered, 0 failed" in stderr and "billed" in stderr
    assert KEY not in stderr


def test_session_flag_off_opens_no_explicit_session(server: LocalServer, tmp_path: Path) -> None:
    _stop_active(server)
    with NCompass(api_key=KEY, base_url=server.base_url) as client:
        summary = client.run_batch(_lines(4), output=tmp_path / "out.jsonl", session=False)
        active = client.sessions.list(status="active")
    assert summary.ok and summary.session_id is None and summary.billed_seconds is None
    assert [s.implicit for s in active] == [True]  # the server's implicit session, which the guard stops
    _stop_active(server)


def test_time_spent_waiting_for_the_model_is_not_billed(tmp_path: Path) -> None:
    with (
        _server(autostart=False, cold_start=1.0) as srv,
        NCompass(api_key=KEY, base_url=srv.base_url) as client,
    ):
        started = time.monotonic()
        summary = client.run_batch(_lines(4), output=tmp_path / "out.jsonl")
        wall = time.monotonic() - started
    assert summary.ok and wall >= 1.0
    assert summary.billed_seconds is not None and summary.billed_seconds < wall - 0.5


# ---------------------------------------------------------------------------------------------------
# concurrency="auto" finds knees that are not the default


@pytest.mark.parametrize(("width", "n"), [(4, 120), (16, 800)])
def test_auto_settles_at_or_past_the_width_of_a_real_deployment(tmp_path: Path, width: int, n: int) -> None:
    """A deployment paced at 20 ms a step, ``width`` sequences wide, per-key limit 32: throughput is flat
    past the width, so ``auto`` must end at or past it and within the limit. How close its throughput
    comes to the best fixed level's is measured by ``bench/batch.py``, not asserted here."""
    engine = SyntheticEngine(max_batch=width, delay=0.02)
    source = _write(tmp_path / "in.jsonl", _lines(n))
    with (
        _server(engine_instance=engine, max_queue_per_key=32) as srv,
        NCompass(api_key=KEY, base_url=srv.base_url) as client,
    ):
        summary = client.run_batch(source, output=tmp_path / "out.jsonl", concurrency="auto")
    assert summary.ok and summary.succeeded == n
    assert width <= summary.concurrency <= 32, summary


def _drive(concurrency: AutoConcurrency, knee: int, results: int = 3000) -> None:
    """Feeds ``concurrency`` the results of a deployment whose throughput is flat past ``knee``."""
    now = 0.0
    for _ in range(results):
        per_second = 10.0 * min(concurrency.level, knee)
        now += 1 / per_second
        concurrency.on_success(now, concurrency.level / per_second, 4)


@pytest.mark.parametrize(("knee", "cap"), [(4, None), (12, None), (12, 64), (40, 64), (100, 32)])
def test_auto_settles_at_or_past_the_knee_and_within_the_cap(knee: int, cap: int | None) -> None:
    concurrency = AutoConcurrency(cap=cap)
    _drive(concurrency, knee)
    assert concurrency.level >= min(knee, cap or knee)
    assert cap is None or concurrency.level <= cap
    assert concurrency.history, "it measured windows"


def test_a_429_caps_auto_below_what_hit_it_and_a_fixed_level_stays() -> None:
    auto = AutoConcurrency()
    _drive(auto, knee=100, results=500)
    auto.on_overload(in_flight=20)
    assert auto.cap == 19 and auto.level <= 19
    _drive(auto, knee=100)
    assert auto.level <= 19
    fixed = FixedConcurrency(12)
    fixed.on_overload(in_flight=12)
    assert fixed.level == 12
    fixed.set_cap(8)  # the server's NCompass-Max-In-Flight
    assert fixed.level == 8
