"""Time-billed sessions: idempotent start, leases, idle_timeout / max_duration stops billed exactly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer

MODEL = "synthetic"


@pytest.fixture
def srv(make_server: Callable[..., LocalServer]) -> LocalServer:
    return make_server()


def test_start_is_idempotent(srv: LocalServer, client: Callable[..., httpx.Client]) -> None:
    with client(srv) as c:
        first = c.post("/v1/sessions", json={"metadata": {"job": "a"}})
        assert first.status_code == 201
        session = first.json()
        assert session["id"].startswith("sess_")
        assert session["object"] == "session"
        assert session["status"] == "active"
        assert session["stopped_at"] is None and session["stop_reason"] is None
        assert session["metadata"] == {"job": "a"}
        again = c.post("/v1/sessions", json={})
        assert again.status_code == 200
        assert again.json()["id"] == session["id"]
        no_body = c.post("/v1/sessions")
        assert no_body.status_code == 200 and no_body.json()["id"] == session["id"]


def test_stop_is_idempotent_and_bills_to_the_stop(
    srv: LocalServer, client: Callable[..., httpx.Client]
) -> None:
    with client(srv) as c:
        session = c.post("/v1/sessions", json={}).json()
        time.sleep(0.3)
        stopped = c.post(f"/v1/sessions/{session['id']}/stop")
        assert stopped.status_code == 200
        body = stopped.json()
        assert body["status"] == "stopped" and body["stop_reason"] == "client"
        assert 0.3 <= body["billed_seconds"] < 2
        assert body["billed_seconds"] == pytest.approx(body["stopped_at"] - body["started_at"], abs=0.002)
        time.sleep(0.2)
        again = c.post(f"/v1/sessions/{session['id']}/stop").json()
        assert again == body  # billing stopped at the first stop
        new = c.post("/v1/sessions", json={})
        assert new.status_code == 201 and new.json()["id"] != session["id"]


def test_usage_accumulates_on_the_active_session(
    srv: LocalServer, client: Callable[..., httpx.Client]
) -> None:
    with client(srv) as c:
        session = c.post("/v1/sessions", json={}).json()
        for _ in range(2):
            r = c.post("/v1/completions", json={"model": MODEL, "prompt": "a b c", "max_tokens": 4})
            assert r.status_code == 200
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
                "stream": True,
            },
        )
        assert r.status_code == 200
        seen = c.get(f"/v1/sessions/{session['id']}").json()
        assert seen["requests"] == 3
        assert seen["usage"]["completion_tokens"] == 4 + 4 + 3
        assert seen["usage"]["prompt_tokens"] > 0


def test_idle_timeout_stops_at_the_lapse(srv: LocalServer, client: Callable[..., httpx.Client]) -> None:
    with client(srv) as c:
        session = c.post("/v1/sessions", json={"idle_timeout": 1.0}).json()
        # Requests renew the lease: after 1.5 s of activity the session is still alive.
        for _ in range(3):
            time.sleep(0.5)
            before = time.time()
            assert c.get("/v1/models").status_code == 200
            after = time.time()
        assert c.get(f"/v1/sessions/{session['id']}").json()["status"] == "active"
        time.sleep(1.5)
        stopped = c.get(f"/v1/sessions/{session['id']}").json()
        assert stopped["status"] == "stopped"
        assert stopped["stop_reason"] == "idle_timeout"
        # Billed to the lapse (the last request + idle_timeout), not to when it was noticed. The
        # session GET above renewed the lease too, so the lapse is at most one request later.
        assert before + 1.0 <= stopped["stopped_at"] <= time.time() - 0.4
        assert stopped["stopped_at"] - (after + 1.0) < 1.0
        assert stopped["billed_seconds"] == pytest.approx(
            stopped["stopped_at"] - stopped["started_at"], abs=0.002
        )


def test_heartbeat_renews_the_lease(srv: LocalServer, client: Callable[..., httpx.Client]) -> None:
    with client(srv) as c:
        session = c.post("/v1/sessions", json={"idle_timeout": 1.0}).json()
        for _ in range(4):  # 1.6 s in all, longer than the lease
            time.sleep(0.4)
            beat = c.post(f"/v1/sessions/{session['id']}/heartbeat")
            assert beat.status_code == 200 and beat.json()["status"] == "active"


def test_the_sweeper_stops_a_lapsed_session_without_any_request(
    srv: LocalServer, client: Callable[..., httpx.Client]
) -> None:
    with client(srv) as c:
        session = c.post("/v1/sessions", json={"idle_timeout": 0.3}).json()
    time.sleep(0.8)
    row = srv.state.db.fetchone("SELECT status, stop_reason FROM sessions WHERE id=?", (session["id"],))
    assert row is not None and row["status"] == "stopped" and row["stop_reason"] == "idle_timeout"


def test_max_duration_stops_even_an_active_client(
    srv: LocalServer, client: Callable[..., httpx.Client]
) -> None:
    with client(srv) as c:
        session = c.post("/v1/sessions", json={"max_duration": 0.5, "idle_timeout": 30}).json()
        deadline = time.time() + 1.2
        while time.time() < deadline:
            c.get("/v1/models")
            time.sleep(0.1)
        stopped = c.get(f"/v1/sessions/{session['id']}").json()
        assert stopped["status"] == "stopped"
        assert stopped["stop_reason"] == "max_duration"
        assert stopped["billed_seconds"] == pytest.approx(0.5, abs=0.01)


def test_list_newest_first_with_filter_and_limit(
    srv: LocalServer, client: Callable[..., httpx.Client]
) -> None:
    with client(srv) as c:
        ids = []
        for _ in range(3):
            s = c.post("/v1/sessions", json={}).json()
            ids.append(s["id"])
            c.post(f"/v1/sessions/{s['id']}/stop")
        active = c.post("/v1/sessions", json={}).json()
        listed = c.get("/v1/sessions").json()
        assert listed["object"] == "list"
        assert [s["id"] for s in listed["data"]] == [active["id"], *reversed(ids)]
        assert [s["id"] for s in c.get("/v1/sessions?status=active").json()["data"]] == [active["id"]]
        assert [s["id"] for s in c.get("/v1/sessions?status=stopped&limit=2").json()["data"]] == [
            ids[2],
            ids[1],
        ]


def test_tenants_never_see_each_other(
    srv: LocalServer, client: Callable[..., httpx.Client], own_keys: tuple[str, str]
) -> None:
    with client(srv) as a, client(srv, key=own_keys[1]) as b:
        mine = a.post("/v1/sessions", json={}).json()
        for method, path in [
            ("GET", f"/v1/sessions/{mine['id']}"),
            ("POST", f"/v1/sessions/{mine['id']}/stop"),
            ("POST", f"/v1/sessions/{mine['id']}/heartbeat"),
        ]:
            response = b.request(method, path)
            assert response.status_code == 404
            assert response.json()["error"]["type"] == "not_found_error"
        assert b.get("/v1/sessions").json()["data"] == []
        theirs = b.post("/v1/sessions", json={})
        assert theirs.status_code == 201  # one active session per key, not per server
        assert a.get(f"/v1/sessions/{mine['id']}").json()["status"] == "active"


def test_session_fields_match_the_protocol(srv: LocalServer, client: Callable[..., httpx.Client]) -> None:
    from ncompass_openai.types import Session

    with client(srv) as c:
        body: dict[str, Any] = c.post("/v1/sessions", json={"idle_timeout": 60, "max_duration": 3600}).json()
    assert set(body) == {
        "id",
        "object",
        "status",
        "started_at",
        "stopped_at",
        "stop_reason",
        "billed_seconds",
        "idle_timeout",
        "max_duration",
        "requests",
        "usage",
        "metadata",
    }
    session = Session.model_validate(body)
    assert session.idle_timeout == 60 and session.max_duration == 3600
