"""``Idempotency-Key``: a retried POST is answered with the first answer and never acts twice."""

from __future__ import annotations

import time
from collections.abc import Callable

from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer


def test_replayed_session_start_does_not_start_twice(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server()
    with client(srv) as c:
        first = c.post("/v1/sessions", json={}, headers={"Idempotency-Key": "start-1"})
        assert first.status_code == 201
        c.post(f"/v1/sessions/{first.json()['id']}/stop")
        retry = c.post("/v1/sessions", json={}, headers={"Idempotency-Key": "start-1"})
        assert retry.status_code == 201
        assert retry.json() == first.json()
        assert retry.headers["idempotent-replayed"] == "true"
        assert len(c.get("/v1/sessions").json()["data"]) == 1  # the retry did not start a second one
        fresh = c.post("/v1/sessions", json={}, headers={"Idempotency-Key": "start-2"})
        assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]


def test_replayed_booking_is_created_once(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server()
    body = {"start_at": time.time() + 3600, "end_at": time.time() + 7200, "note": "once"}
    with client(srv) as c:
        answers = [
            c.post("/v1/deployment/bookings", json=body, headers={"Idempotency-Key": "b-1"}) for _ in range(3)
        ]
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        assert len(c.get("/v1/deployment/bookings").json()["data"]) == 1


def test_keys_are_scoped_to_tenant_and_route(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], own_keys: tuple[str, str]
) -> None:
    srv = make_server()
    headers = {"Idempotency-Key": "shared"}
    with client(srv) as a, client(srv, key=own_keys[1]) as b:
        mine = a.post("/v1/sessions", json={}, headers=headers).json()
        theirs = b.post("/v1/sessions", json={}, headers=headers).json()
        assert mine["id"] != theirs["id"]
        stop = a.post(f"/v1/sessions/{mine['id']}/stop", headers=headers)
        assert stop.status_code == 200 and stop.json()["status"] == "stopped"


def test_same_key_with_another_body_is_rejected(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server()
    with client(srv) as c:
        assert (
            c.post("/v1/sessions", json={"metadata": {"a": 1}}, headers={"Idempotency-Key": "k"}).status_code
            == 201
        )
        reused = c.post("/v1/sessions", json={"metadata": {"a": 2}}, headers={"Idempotency-Key": "k"})
        assert reused.status_code == 400
        assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_retryable_answers_are_not_replayed(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server(autostart=False)
    body = {"model": "synthetic", "prompt": "x", "max_tokens": 1}
    with client(srv) as c:
        assert c.post("/v1/completions", json=body, headers={"Idempotency-Key": "c"}).status_code == 503
        c.post("/v1/deployment/start")
        deadline = time.monotonic() + 5
        while c.get("/v1/deployment").json()["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        # The 503 was not stored: the retry with the same key really runs now.
        assert c.post("/v1/completions", json=body, headers={"Idempotency-Key": "c"}).status_code == 200


def test_an_unauthenticated_request_is_never_stored(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client]
) -> None:
    srv = make_server()
    with client(srv, key="wrong") as bad, client(srv) as good:
        assert bad.post("/v1/sessions", json={}, headers={"Idempotency-Key": "z"}).status_code == 401
        assert good.post("/v1/sessions", json={}, headers={"Idempotency-Key": "z"}).status_code == 201


def test_a_client_that_hangs_up_leaves_no_answer_to_replay(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], own_keys: tuple[str, str]
) -> None:
    # openai's own timeout retry does exactly this: give up on a slow answer, then retry with the same key.
    import json
    import socket

    from ncompass_openai.server.engines.synthetic import SyntheticEngine

    srv = make_server(engine_instance=SyntheticEngine(delay=0.02))
    body = json.dumps({"model": "synthetic", "prompt": "hi", "max_tokens": 40}).encode()  # about 0.8 s
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {own_keys[0]}\r\nIdempotency-Key: hang-up-1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:  # a real client that hangs up
        sock.sendall(head.encode() + body)
        time.sleep(0.2)
    tenant = srv.state.tenants.tenants[0].id
    deadline = time.monotonic() + 10
    while srv.state.backend.inflight(tenant) and time.monotonic() < deadline:
        time.sleep(0.02)  # the server noticed, and stopped that generation
    time.sleep(0.2)
    headers = {"Idempotency-Key": "hang-up-1", "Content-Type": "application/json"}
    with client(srv) as http:
        retry = http.post("/v1/completions", content=body, headers=headers)
        assert retry.status_code == 200, retry.text  # run for real, not a replayed 499
        assert "idempotent-replayed" not in retry.headers
        again = http.post("/v1/completions", content=body, headers=headers)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == retry.json()  # the complete answer is the one kept
