"""The deployment lifecycle, idle shutdown and bookings (keep-warm windows)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer
from ncompass_openai.server.engines.synthetic import SyntheticEngine
from ncompass_openai.types import Booking, Deployment

MODEL = "synthetic"
COMPLETION = {"model": MODEL, "prompt": "x", "max_tokens": 2}


def _wait_state(c: httpx.Client, state: str, timeout: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, object] = c.get("/v1/deployment").json()
        if body["state"] == state or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_status_fields(make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]) -> None:
    srv = make_server(idle_shutdown=123)
    with client(srv) as c:
        body = c.get("/v1/deployment").json()
    deployment = Deployment.model_validate(body)
    assert set(body) == {
        "object",
        "model",
        "state",
        "ready",
        "state_since",
        "last_request_at",
        "idle_shutdown",
        "estimated_ready_at",
        "error",
    }
    assert deployment.state == "running" and deployment.ready
    assert deployment.model == MODEL
    assert deployment.idle_shutdown == 123
    assert deployment.estimated_ready_at is None and deployment.error is None


def test_stop_and_start(make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]) -> None:
    srv = make_server()
    with client(srv) as c:
        assert c.post("/v1/deployment/start").status_code == 200  # already running
        stop = c.post("/v1/deployment/stop")
        assert stop.status_code == 202
        assert stop.json()["state"] in ("stopping", "stopped")
        assert _wait_state(c, "stopped")["state"] == "stopped"
        assert c.post("/v1/deployment/stop").status_code == 200  # already stopped
        assert c.post("/v1/completions", json=COMPLETION).status_code == 503
        start = c.post("/v1/deployment/start")
        assert start.status_code == 202
        assert _wait_state(c, "running")["ready"] is True
        assert c.post("/v1/completions", json=COMPLETION).status_code == 200


def test_cold_start_reports_progress(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(cold_start=2.0, wait_for_model=False)
    with client(srv) as c:
        starting = c.get("/v1/deployment").json()
        assert starting["state"] == "starting" and starting["ready"] is False
        assert starting["estimated_ready_at"] >= time.time()
        assert c.post("/v1/deployment/start").status_code == 202  # already starting: no second start
        running = _wait_state(c, "running")
        assert running["state"] == "running"
        assert running["state_since"] - starting["state_since"] >= 1.95


def test_tenants_have_their_own_deployment(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], own_keys: tuple[str, str]
) -> None:
    srv = make_server()
    with client(srv) as a, client(srv, key=own_keys[1]) as b:
        a.post("/v1/deployment/stop")
        assert _wait_state(a, "stopped")["state"] == "stopped"
        assert b.get("/v1/deployment").json()["state"] == "running"
        assert b.post("/v1/completions", json=COMPLETION).status_code == 200
        assert a.post("/v1/completions", json=COMPLETION).status_code == 503
        # The last tenant to stop frees the weights; the next start loads them again.
        b.post("/v1/deployment/stop")
        assert _wait_state(b, "stopped")["state"] == "stopped"
        assert not srv.state.backend.loaded
        a.post("/v1/deployment/start")
        assert _wait_state(a, "running")["state"] == "running"
        assert srv.state.backend.loaded


class _BrokenEngine(SyntheticEngine):
    def load(self) -> None:
        raise OSError("weights file is corrupt")


def test_failed_start_reports_the_error(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(engine_instance=_BrokenEngine())
    with client(srv) as c:
        failed = _wait_state(c, "failed")
        assert failed["state"] == "failed"
        assert "weights file is corrupt" in str(failed["error"])
        response = c.post("/v1/completions", json=COMPLETION)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_stopped"
        assert response.headers["x-should-retry"] == "false"


def test_idle_shutdown(make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]) -> None:
    srv = make_server(idle_shutdown=1.0)
    with client(srv) as c:
        for _ in range(4):  # inference keeps it up for 1.6 s
            assert c.post("/v1/completions", json=COMPLETION).status_code == 200
            time.sleep(0.4)
        assert c.get("/v1/deployment").json()["state"] == "running"
        assert c.get("/v1/deployment").json()["last_request_at"] is not None
        time.sleep(1.5)
        assert c.get("/v1/deployment").json()["state"] == "stopped"


# -- bookings -------------------------------------------------------------------------------------


def test_booking_create_list_cancel(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], own_keys: tuple[str, str]
) -> None:
    srv = make_server()
    now = time.time()
    with client(srv) as c, client(srv, key=own_keys[1]) as other:
        later = c.post(
            "/v1/deployment/bookings", json={"start_at": now + 7200, "end_at": now + 9000, "note": "b"}
        )
        iso_start = datetime.fromtimestamp(now + 3600, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        sooner = c.post(
            "/v1/deployment/bookings",
            json={"start_at": iso_start, "end_at": now + 5400, "note": "demo"},
        )
        assert later.status_code == 201 and sooner.status_code == 201
        booking = Booking.model_validate(sooner.json())
        assert booking.id.startswith("book_") and booking.status == "scheduled" and booking.note == "demo"
        assert booking.start_at == pytest.approx(now + 3600, abs=1e-3)
        listed = c.get("/v1/deployment/bookings").json()["data"]
        assert [b["id"] for b in listed] == [booking.id, later.json()["id"]]  # soonest first
        assert other.get("/v1/deployment/bookings").json()["data"] == []
        assert other.delete(f"/v1/deployment/bookings/{booking.id}").status_code == 404
        cancelled = c.delete(f"/v1/deployment/bookings/{booking.id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_booking_keeps_the_model_ready_through_its_window(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    # Stopped at boot, short cold start, aggressive idle shutdown: only the booking can explain the model
    # being up at start_at and staying up until end_at.
    srv = make_server(autostart=False, cold_start=0.3, idle_shutdown=0.3)
    with client(srv) as c:
        assert c.get("/v1/deployment").json()["state"] == "stopped"
        start_at = time.time() + 1.5
        end_at = start_at + 1.5
        booking = c.post("/v1/deployment/bookings", json={"start_at": start_at, "end_at": end_at}).json()
        time.sleep(max(0.0, start_at - time.time()))
        assert c.get("/v1/deployment").json()["state"] == "running"
        assert c.post("/v1/completions", json=COMPLETION).status_code == 200
        assert c.get(f"/v1/deployment/bookings/{booking['id']}").json()["status"] == "active"
        while time.time() < end_at - 0.1:  # no inference, yet no idle stop inside the window
            assert c.get("/v1/deployment").json()["state"] == "running"
            time.sleep(0.1)
        time.sleep(1.0)  # after the window the idle clock runs again
        assert c.get("/v1/deployment").json()["state"] == "stopped"
        assert c.get(f"/v1/deployment/bookings/{booking['id']}").json()["status"] == "finished"


@pytest.mark.parametrize(("cold_start", "load_time"), [(2.0, 0.0), (0.0, 2.0)])
def test_stop_while_starting(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    own_keys: tuple[str, str],
    cold_start: float,
    load_time: float,
) -> None:
    began = time.time()
    srv = make_server(
        api_keys=[own_keys[0]],  # one tenant: nobody else keeps the weights loaded
        cold_start=cold_start,
        engine_instance=SyntheticEngine(load_time=load_time),
        wait_for_model=False,
    )
    with client(srv) as c:
        assert c.get("/v1/deployment").json()["state"] == "starting"
        assert c.post("/v1/deployment/stop").status_code == 202
        assert _wait_state(c, "stopped")["state"] == "stopped"
        # Past the moment the abandoned start would have finished: it neither finished nor left the
        # weights loaded.
        time.sleep(max(0.0, began + cold_start + load_time + 0.3 - time.time()))
        assert c.get("/v1/deployment").json()["state"] == "stopped"
        assert not srv.state.backend.loaded
        c.post("/v1/deployment/start")
        assert _wait_state(c, "running")["state"] == "running"


def test_desired_state_survives_a_restart(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    db = f"{tmp_path}/ledger.sqlite3"
    first = make_server(db=db, autostart=False)
    with client(first) as c:
        c.post("/v1/deployment/start")
        assert _wait_state(c, "running")["state"] == "running"
        assert c.post("/v1/completions", json=COMPLETION).status_code == 200
        last_request_at = c.get("/v1/deployment").json()["last_request_at"]
    first.stop()
    second = make_server(db=db, autostart=False)
    with client(second) as c, client(second, key=second.settings.api_keys[1]) as other:
        restored = _wait_state(c, "running")
        assert restored["state"] == "running"  # it was running when the server went away
        assert restored["last_request_at"] == last_request_at
        assert other.get("/v1/deployment").json()["state"] == "stopped"  # never started
