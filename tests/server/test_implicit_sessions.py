"""Inference outside a session is billed honestly: the first answered request opens an implicit session."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ncompass_openai._compat import httpx
from ncompass_openai.server.engines.synthetic import SyntheticEngine

COMPLETION = {"model": "synthetic", "prompt": "hi", "max_tokens": 3}
CHAT = {"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def _sessions(c: httpx.Client) -> list[dict[str, Any]]:
    answer = c.get("/v1/sessions")
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("route", "body"), [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
def test_first_answer_opens_an_implicit_session_named_in_a_header(
    make_server: Any, client: Any, route: str, body: dict[str, Any], stream: bool
) -> None:
    srv = make_server(implicit_idle_timeout=120)
    with client(srv) as c:
        first = c.post(route, json={**body, "stream": stream})
        assert first.status_code == 200, first.text
        session_id = first.headers["NCompass-Session"]
        assert session_id.startswith("sess_")
        assert first.headers["NCompass-Session-Opened"] == "true"
        second = c.post(route, json={**body, "stream": stream})
        assert second.headers["NCompass-Session"] == session_id
        assert "NCompass-Session-Opened" not in second.headers
        [session] = _sessions(c)
    assert session["id"] == session_id and session["status"] == "active"
    assert session["metadata"] == {"implicit": True}
    assert session["idle_timeout"] == 120 and session["max_duration"] is None
    assert session["requests"] == 2 and session["usage"]["completion_tokens"] == 6


def test_a_refused_request_opens_nothing(make_server: Any, client: Any) -> None:
    srv = make_server()
    with client(srv) as c:
        refused = [
            c.post("/v1/completions", json={**COMPLETION, "model": "other"}),  # 404
            c.post("/v1/completions", json={**COMPLETION, "max_tokens": 0}),  # 400
            c.post("/v1/completions", json={**COMPLETION, "stream_options": {"include_usage": True}}),
        ]
        assert [r.status_code for r in refused] == [404, 400, 400]
        assert c.post("/v1/deployment/stop").status_code in (200, 202)
        deadline = time.monotonic() + 10
        while c.get("/v1/deployment").json()["state"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped = c.post("/v1/completions", json=COMPLETION)
        assert stopped.status_code == 503
        for answer in [*refused, stopped]:
            assert "NCompass-Session" not in answer.headers
        assert _sessions(c) == []


def test_an_explicit_session_is_named_and_nothing_is_opened(make_server: Any, client: Any) -> None:
    srv = make_server()
    with client(srv) as c:
        started = c.post("/v1/sessions", json={}).json()
        answer = c.post("/v1/completions", json=COMPLETION)
        assert answer.headers["NCompass-Session"] == started["id"]
        assert "NCompass-Session-Opened" not in answer.headers
        assert [s["id"] for s in _sessions(c)] == [started["id"]]


def test_an_explicit_start_replaces_the_implicit_session_at_the_same_instant(
    make_server: Any, client: Any
) -> None:
    srv = make_server()
    with client(srv) as c:
        implicit_id = c.post("/v1/completions", json=COMPLETION).headers["NCompass-Session"]
        answer = c.post("/v1/sessions", json={"idle_timeout": 30, "max_duration": 60, "metadata": {"job": 1}})
        assert answer.status_code == 201, answer.text
        explicit = answer.json()
        assert explicit["id"] != implicit_id
        assert (explicit["idle_timeout"], explicit["max_duration"]) == (30, 60)
        assert explicit["metadata"] == {"job": 1}
        replaced = c.get(f"/v1/sessions/{implicit_id}").json()
        assert replaced["status"] == "stopped" and replaced["stop_reason"] == "replaced"
        assert replaced["stopped_at"] == explicit["started_at"]  # no second billed twice
        # A second start answers the explicit session, as before: one active session per key.
        again = c.post("/v1/sessions", json={})
        assert again.status_code == 200 and again.json()["id"] == explicit["id"]


def test_the_implicit_session_lapses_on_its_own_short_lease(make_server: Any, client: Any) -> None:
    srv = make_server(implicit_idle_timeout=0.3)
    with client(srv) as c:
        session_id = c.post("/v1/completions", json=COMPLETION).headers["NCompass-Session"]
        time.sleep(1.0)  # no request meanwhile: every request of the key renews the lease
        session = c.get(f"/v1/sessions/{session_id}").json()
    assert session["status"] == "stopped" and session["stop_reason"] == "idle_timeout"
    assert session["billed_seconds"] == pytest.approx(0.3, abs=0.2)  # stopped at the lapse, not later


def test_the_metadata_key_implicit_is_reserved(make_server: Any, client: Any) -> None:
    srv = make_server()
    with client(srv) as c:
        answer = c.post("/v1/sessions", json={"metadata": {"implicit": True}})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "metadata"


def test_concurrent_first_requests_open_one_session(make_server: Any, client: Any) -> None:
    srv = make_server(engine_instance=SyntheticEngine(delay=0.01))
    answers: list[httpx.Response] = []

    def send() -> None:
        with client(srv) as c:
            answers.append(c.post("/v1/completions", json=COMPLETION))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * 6
    assert len({a.headers["NCompass-Session"] for a in answers}) == 1
    assert sum(a.headers.get("NCompass-Session-Opened") == "true" for a in answers) == 1
    with client(srv) as c:
        [session] = _sessions(c)
    assert session["requests"] == 6


def test_a_request_outliving_its_session_never_bills_a_second_twice(make_server: Any, client: Any) -> None:
    # The explicit session is stopped while a non-streamed request runs: the answer opens an implicit
    # session that starts where the explicit one stopped, not when the request arrived.
    srv = make_server(engine_instance=SyntheticEngine(delay=0.02))
    with client(srv) as c:
        explicit = c.post("/v1/sessions", json={}).json()
        slow: list[httpx.Response] = []
        worker = threading.Thread(
            target=lambda: slow.append(c.post("/v1/completions", json={**COMPLETION, "max_tokens": 40}))
        )
        worker.start()
        time.sleep(0.3)
        stopped = c.post(f"/v1/sessions/{explicit['id']}/stop").json()
        worker.join()
        implicit = c.get(f"/v1/sessions/{slow[0].headers['NCompass-Session']}").json()
    assert implicit["metadata"] == {"implicit": True}
    assert implicit["started_at"] >= stopped["stopped_at"]


def test_a_replayed_answer_names_the_session_it_was_billed_to(make_server: Any, client: Any) -> None:
    srv = make_server()
    with client(srv) as c:
        key = {"Idempotency-Key": "replay-implicit-1"}
        first = c.post("/v1/completions", json=COMPLETION, headers=key)
        again = c.post("/v1/completions", json=COMPLETION, headers=key)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["NCompass-Session"] == first.headers["NCompass-Session"]
        [session] = _sessions(c)
    assert session["requests"] == 1  # the replay ran nothing and billed no request
