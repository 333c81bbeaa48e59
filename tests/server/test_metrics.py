"""``GET /metrics`` (``--metrics``): Prometheus text a real parser reads, counts that match the answers,
no key and no tenant id in it, and nothing served when the flag is off."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer
from ncompass_openai.server.engines.synthetic import SyntheticEngine
from ncompass_openai.server.http._metrics import tenant_label
from ncompass_openai.server.ledger._auth import hash_key, tenant_id_for

from .conftest import ServerProcess

CHAT = {"model": "synthetic", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(srv: LocalServer) -> tuple[str, Samples]:
    answer = httpx.get(srv.url + "/metrics", timeout=10.0)  # no key: a scraper has none
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return answer.text, samples


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _tenant(key: str) -> str:
    return tenant_label(tenant_id_for(hash_key(key)))


def test_off_by_default(make_server: Callable[..., LocalServer]) -> None:
    srv = make_server()
    answer = httpx.get(srv.url + "/metrics")
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "not_found_error"
    assert "/metrics" not in httpx.get(srv.url + "/openapi.json").json()["paths"]


def test_counts_follow_the_answers(
    make_server: Callable[..., LocalServer],
    client: Callable[..., httpx.Client],
    own_keys: tuple[str, str],
) -> None:
    srv = make_server(metrics=True)
    route = "/v1/chat/completions"
    _, before = _scrape(srv)
    with client(srv) as c:
        usage = c.post(route, json=CHAT).json()["usage"]
        with c.stream("POST", route, json={**CHAT, "stream": True}) as streamed:
            body = "".join(streamed.iter_text())
        assert body.rstrip().endswith("data: [DONE]")
        assert c.post(route, json={**CHAT, "max_tokens": -1}).status_code == 400
        assert c.get("/v1/no-such-route").status_code == 404
        assert c.get("/v1/sessions/ses_nope").status_code == 404
    with client(srv, key="nc-wrong-key") as c:
        assert c.get("/v1/models").status_code == 401
    text, after = _scrape(srv)

    def grew(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert grew("ncompass_requests_total", route=route, method="POST", status="200") == 2
    assert grew("ncompass_requests_total", route=route, method="POST", status="400") == 1
    assert grew("ncompass_requests_total", route="/v1/models", method="GET", status="401") == 1
    # A path no route serves is one label; a route's template is the label, not the id in the path.
    assert grew("ncompass_requests_total", route="unmatched", method="GET", status="404") == 1
    assert grew("ncompass_requests_total", route="/v1/sessions/{session_id}", method="GET", status="404") == 1
    assert grew("ncompass_request_duration_seconds_count", route=route) == 3
    # Tokens: the two answered requests (5 each, the stream's as long as the plain one's).
    assert grew("ncompass_tokens_total", route=route, kind="completion") == 2 * usage["completion_tokens"]
    assert grew("ncompass_tokens_total", route=route, kind="prompt") == 2 * usage["prompt_tokens"]
    # The implicit session those requests opened: open, billing, its deployment running.
    a = _tenant(own_keys[0])
    assert _get(after, "ncompass_sessions_active", tenant=a) == 1
    assert _get(after, "ncompass_billed_seconds_total", tenant=a) > 0
    assert _get(after, "ncompass_deployment_state", tenant=a, state="running") == 1
    assert _get(after, "ncompass_deployment_state", tenant=a, state="stopped") == 0
    assert _get(after, "ncompass_server_info", version=_version(), engine="synthetic", model="synthetic") == 1
    # Nothing of a key or a tenant id in clear: not the keys, their hashes, the ids, nor the ids' hashes.
    for key in own_keys:
        key_hash = hash_key(key)
        tenant_id = tenant_id_for(key_hash)
        for secret in (key, key_hash, tenant_id, tenant_id.removeprefix("tnt_")):
            assert secret not in text
        assert hashlib.sha256(tenant_id.encode()).hexdigest()[:12] not in text
    assert "nc-wrong-key" not in text


def _version() -> str:
    from ncompass_openai import __version__

    return __version__


def test_billed_seconds_stop_with_the_session(
    make_server: Callable[..., LocalServer], client: Callable[..., httpx.Client], own_keys: tuple[str, str]
) -> None:
    srv = make_server(metrics=True)
    a, b = (_tenant(k) for k in own_keys)
    with client(srv) as c:
        session = c.post("/v1/sessions", json={}).json()
        time.sleep(0.3)
        stopped = c.post(f"/v1/sessions/{session['id']}/stop").json()
    _, first = _scrape(srv)
    time.sleep(0.2)
    _, second = _scrape(srv)
    billed = _get(first, "ncompass_billed_seconds_total", tenant=a)
    assert billed == pytest.approx(stopped["billed_seconds"], abs=0.002)
    assert _get(second, "ncompass_billed_seconds_total", tenant=a) == billed  # stopped: no longer grows
    assert _get(first, "ncompass_sessions_active", tenant=a) == 0
    assert _get(first, "ncompass_billed_seconds_total", tenant=b) == 0  # the other tenant: nothing billed


def test_running_and_queued_per_tenant(own_keys: tuple[str, str]) -> None:
    # One slot, slow steps: of two streams of one tenant, one generates and one waits.
    engine = SyntheticEngine(max_batch=1, delay=0.05)
    with LocalServer(engine_instance=engine, api_keys=list(own_keys), metrics=True) as srv:
        headers = {"Authorization": f"Bearer {own_keys[0]}"}
        done = []

        def stream() -> None:
            body = {**CHAT, "max_tokens": 30, "stream": True}
            with httpx.stream("POST", srv.base_url + "/chat/completions", json=body, headers=headers) as r:
                done.append("".join(r.iter_text()))

        threads = [threading.Thread(target=stream) for _ in range(2)]
        for t in threads:
            t.start()
        a = _tenant(own_keys[0])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _, during = _scrape(srv)
            if _get(during, "ncompass_requests_queued", tenant=a) == 1:
                break
            time.sleep(0.02)
        assert _get(during, "ncompass_requests_running", tenant=a) == 1
        assert _get(during, "ncompass_requests_queued", tenant=a) == 1
        assert _get(during, "ncompass_requests_running", tenant=_tenant(own_keys[1])) == 0
        for t in threads:
            t.join(10)
        _, after = _scrape(srv)
    assert len(done) == 2
    assert _get(after, "ncompass_requests_running", tenant=a) == 0
    assert _get(after, "ncompass_requests_queued", tenant=a) == 0


def test_serve_flag(tmp_path: Path, spawn_server: Callable[..., ServerProcess]) -> None:
    proc = spawn_server("--db", ":memory:", "--api-key", "nc-metrics-flag-key-1234", "--metrics")
    answer = httpx.get(proc.url + "/metrics", timeout=10.0)
    proc.stop()
    assert answer.status_code == 200
    assert "ncompass_requests_total" in answer.text
    assert "nc-metrics-flag-key-1234" not in answer.text
