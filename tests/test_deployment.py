"""client.deployment (+ bookings) and the cold-start 503s, against a private server with a slow start."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import openai
import pytest

from _helpers import Recorder, close, make_client, resolve
from ncompass_openai import (
    AsyncNCompass,
    Booking,
    Deployment,
    DeploymentFailedError,
    DeploymentTimeoutError,
    ModelNotRunningError,
    NCompass,
)
from ncompass_openai.server import LocalServer
from ncompass_openai.server.engines.synthetic import SyntheticEngine

pytestmark = pytest.mark.anyio

COLD_KEY = "nc-test-cold-tenant-000000001"
COLD_START = 1.5


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def cold_server() -> Iterator[LocalServer]:
    """A private server whose model is stopped at boot and takes COLD_START seconds to start."""
    with LocalServer(
        engine="synthetic", api_keys=[COLD_KEY], cold_start=COLD_START, autostart=False, sweep_interval=0.05
    ) as srv:
        yield srv


def _settle(srv: LocalServer, want: str) -> Deployment:
    """Brings the cold server's deployment to `want` ("stopped" or "running") with a plain client."""
    with NCompass(api_key=COLD_KEY, base_url=srv.base_url) as c:
        if want == "running":
            return c.deployment.ensure_running(timeout=30, poll_interval=0.1)
        c.deployment.stop()
        deadline = time.monotonic() + 30
        while (d := c.deployment.status()).state != "stopped":
            assert time.monotonic() < deadline, d
            time.sleep(0.05)
        return d


@pytest.fixture
async def cold(kind: str, cold_server: LocalServer) -> AsyncIterator[NCompass | AsyncNCompass]:
    """A client of the cold server, its deployment stopped."""
    _settle(cold_server, "stopped")
    c = make_client(kind, api_key=COLD_KEY, base_url=cold_server.base_url)
    yield c
    await close(c)


# -- status / start / stop / waits ----------------------------------------------------------------------


async def test_status_start_stop(cold: Any) -> None:
    status = await resolve(cold.deployment.status())
    assert isinstance(status, Deployment)
    assert status.state == "stopped" and status.ready is False
    assert await resolve(cold.deployment.is_running()) is False
    started = await resolve(cold.deployment.start())
    assert started.state == "starting"
    assert started.estimated_ready_at is not None and started.estimated_ready_at > time.time()
    stopped = await resolve(cold.deployment.stop())
    assert stopped.state in ("stopping", "stopped")


async def test_wait_until_running_times_out_on_a_monotonic_deadline(cold: Any) -> None:
    # A starting model (1.5 s cold start) and a shorter wait. (This test used a stopped model until a
    # stopped one started to fail the wait at once: see the next test.)
    await resolve(cold.deployment.start())
    began = time.monotonic()
    with pytest.raises(DeploymentTimeoutError) as info:
        await resolve(cold.deployment.wait_until_running(timeout=0.4, poll_interval=0.1))
    elapsed = time.monotonic() - began
    assert 0.4 <= elapsed < 2.0
    assert info.value.state == "starting"
    assert "ncompass model start" in str(info.value)
    assert isinstance(info.value, TimeoutError)


async def test_waiting_on_a_stopped_model_fails_at_once(cold: Any) -> None:
    began = time.monotonic()
    with pytest.raises(ModelNotRunningError) as info:
        await resolve(cold.deployment.wait_until_running(timeout=60))
    assert time.monotonic() - began < 1.0  # not the 60 s timeout: a stopped model never comes up alone
    assert info.value.state == "stopped"
    for hint in ("client.deployment.start()", "ncompass model start"):
        assert hint in str(info.value)


async def test_a_booking_due_within_the_wait_is_waited_for(cold: Any) -> None:
    start = time.time() + 1.0
    booking = await resolve(cold.deployment.bookings.create(start_at=start, end_at=start + 60))
    try:
        deployment = await resolve(cold.deployment.wait_until_running(timeout=30, poll_interval=0.1))
        assert deployment.state == "running"  # the server started it for the booking
    finally:
        await resolve(cold.deployment.bookings.cancel(booking.id))


async def test_ensure_running_starts_and_follows_progress(cold: Any) -> None:
    seen: list[Deployment] = []
    began = time.monotonic()
    deployment = await resolve(
        cold.deployment.ensure_running(timeout=30, poll_interval=0.1, on_progress=seen.append)
    )
    elapsed = time.monotonic() - began
    assert deployment.state == "running" and deployment.ready
    assert elapsed >= COLD_START * 0.8
    states = [d.state for d in seen]
    assert states[0] == "starting" and states[-1] == "running"
    # The wait follows estimated_ready_at: fewer polls than one every poll_interval.
    assert len(seen) < COLD_START / 0.1, states
    assert await resolve(cold.deployment.is_running()) is True
    again = await resolve(cold.deployment.ensure_running(timeout=1))
    assert again.state == "running"


@pytest.mark.parametrize(("timeout", "poll"), [(-1, 1.0), (10, 0), (10, float("nan")), (10, True)])
async def test_bad_wait_arguments_fail_before_any_request(
    kind: str, cold_server: LocalServer, timeout: float, poll: float
) -> None:
    recorder = Recorder()
    c = make_client(
        kind, api_key=COLD_KEY, base_url=cold_server.base_url, http_client=recorder.http_client(kind)
    )
    with pytest.raises(ValueError):
        await resolve(c.deployment.wait_until_running(timeout=timeout, poll_interval=poll))
    with pytest.raises(ValueError):
        await resolve(c.deployment.ensure_running(timeout=timeout, poll_interval=poll))
    await close(c)
    assert recorder.requests == []


class _BrokenEngine(SyntheticEngine):
    """An engine whose weights cannot be loaded: the deployment's start really fails on the server."""

    def load(self) -> None:
        raise OSError("weights file is corrupt")


async def test_failed_deployment_raises(kind: str) -> None:
    with LocalServer(engine_instance=_BrokenEngine(), api_keys=[COLD_KEY], autostart=False) as srv:
        c = make_client(kind, api_key=COLD_KEY, base_url=srv.base_url)
        with pytest.raises(DeploymentFailedError) as info:
            await resolve(c.deployment.ensure_running(timeout=30, poll_interval=0.1))
        await close(c)
    assert info.value.error and "corrupt" in info.value.error
    assert "ncompass model start" in str(info.value)


# -- the 503s of a model that is not running ---------------------------------------------------------------


async def test_model_starting_is_retried_honouring_retry_after(kind: str, cold_server: LocalServer) -> None:
    _settle(cold_server, "stopped")
    recorder = Recorder()
    c = make_client(
        kind,
        api_key=COLD_KEY,
        base_url=cold_server.base_url,
        max_retries=6,
        http_client=recorder.http_client(kind),
    )
    await resolve(c.deployment.start())
    began = time.monotonic()
    completion = await resolve(c.completions.create(model="synthetic", prompt="x", max_tokens=2))
    elapsed = time.monotonic() - began
    await close(c)
    assert completion.choices

    attempts = [r for r in recorder.requests if r.url.path == "/v1/completions"]
    answers = [r for r in recorder.responses if r.request.url.path == "/v1/completions"]
    assert len(attempts) >= 2
    first = answers[0]
    assert first.status_code == 503
    assert first.headers["x-should-retry"] == "true"
    retry_after = float(first.headers["retry-after"])
    assert 0 < retry_after <= 120
    assert elapsed >= min(retry_after, COLD_START) * 0.9  # openai waited as told, not its own 0.5 s
    assert answers[-1].status_code == 200
    # One Idempotency-Key for the request, the same on every retry.
    keys = {r.headers["idempotency-key"] for r in attempts}
    assert len(keys) == 1 and next(iter(keys))
    assert [r.headers["x-stainless-retry-count"] for r in attempts] == [str(i) for i in range(len(attempts))]


async def test_model_starting_beyond_the_retry_budget_is_openais_error(
    kind: str, cold_server: LocalServer
) -> None:
    _settle(cold_server, "stopped")
    c = make_client(kind, api_key=COLD_KEY, base_url=cold_server.base_url, max_retries=0)
    await resolve(c.deployment.start())
    with pytest.raises(openai.InternalServerError) as info:
        await resolve(c.completions.create(model="synthetic", prompt="x", max_tokens=2))
    await close(c)
    assert not isinstance(info.value, ModelNotRunningError)
    assert info.value.status_code == 503
    assert info.value.code == "model_starting"


async def test_model_stopped_raises_at_once(kind: str, cold_server: LocalServer) -> None:
    _settle(cold_server, "stopped")
    recorder = Recorder()
    c = make_client(
        kind, api_key=COLD_KEY, base_url=cold_server.base_url, http_client=recorder.http_client(kind)
    )
    began = time.monotonic()
    with pytest.raises(ModelNotRunningError) as info:
        await resolve(
            c.chat.completions.create(
                model="synthetic", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        )
    elapsed = time.monotonic() - began
    await close(c)
    assert elapsed < 1.0
    assert len([r for r in recorder.requests if r.method == "POST"]) == 1  # no retry
    error = info.value
    assert isinstance(error, openai.InternalServerError) and error.status_code == 503
    assert error.state == "stopped"
    assert "client.deployment.start()" in str(error) and "ncompass model start" in str(error)


# -- bookings -----------------------------------------------------------------------------------------------


async def test_bookings_create_list_cancel(kind: str, base_url: str, api_key: str) -> None:
    c = make_client(kind, api_key=api_key, base_url=base_url)
    now = datetime.now(timezone.utc)
    aware = await resolve(
        c.deployment.bookings.create(
            start_at=now + timedelta(hours=1), end_at=now + timedelta(hours=2), note="a"
        )
    )
    unix = await resolve(c.deployment.bookings.create(start_at=time.time() + 600, end_at=time.time() + 900))
    naive_start = datetime.now() + timedelta(hours=3)  # naive: local time
    naive = await resolve(
        c.deployment.bookings.create(start_at=naive_start, end_at=naive_start + timedelta(minutes=30))
    )
    try:
        assert isinstance(aware, Booking) and aware.status == "scheduled" and aware.note == "a"
        assert aware.start_at == pytest.approx((now + timedelta(hours=1)).timestamp(), abs=1e-3)
        assert naive.start_at == pytest.approx(naive_start.timestamp(), abs=1e-3)
        listed = await resolve(c.deployment.bookings.list())
        ids = [b.id for b in listed]
        assert {aware.id, unix.id, naive.id} <= set(ids)
        mine = [b for b in listed if b.id in {aware.id, unix.id, naive.id}]
        assert [b.id for b in mine] == [unix.id, aware.id, naive.id]  # soonest first
    finally:
        for booking in (aware, unix, naive):
            cancelled = await resolve(c.deployment.bookings.cancel(booking.id))
            assert cancelled.status == "cancelled"
        await close(c)


@pytest.mark.parametrize(
    ("start", "end", "error"),
    [
        (7200.0, 3600.0, ValueError),  # end before start
        (-7200.0, -3600.0, ValueError),  # in the past
        (3600.0, 3600.0, ValueError),  # empty window
        (True, 3600.0, TypeError),
        ("tomorrow", 3600.0, ValueError),
        (3600.0, 1e13, ValueError),  # milliseconds
    ],
)
async def test_bad_bookings_fail_before_any_request(
    kind: str, base_url: str, api_key: str, start: Any, end: Any, error: type[Exception]
) -> None:
    recorder = Recorder()
    c = make_client(kind, api_key=api_key, base_url=base_url, http_client=recorder.http_client(kind))
    now = time.time()
    start_at = now + start if isinstance(start, float) else start
    end_at = now + end if isinstance(end, float) and end < 1e12 else end
    with pytest.raises(error):
        await resolve(c.deployment.bookings.create(start_at=start_at, end_at=end_at))
    await close(c)
    assert recorder.requests == []


async def test_booking_accepts_iso_strings(kind: str, base_url: str, api_key: str) -> None:
    c = make_client(kind, api_key=api_key, base_url=base_url)
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    booking = await resolve(
        c.deployment.bookings.create(
            start_at=start.isoformat().replace("+00:00", "Z"), end_at=(start + timedelta(hours=1)).isoformat()
        )
    )
    await resolve(c.deployment.bookings.cancel(booking.id))
    await close(c)
    assert booking.start_at == start.timestamp()
