"""schemathesis over the server's own ``/openapi.json``: every operation, positive and negative data.

Checks on every answer: never a 5xx other than the protocol's documented 503s, every answer conforms
to the schema of its status, every error has OpenAI's shape, and negative data is answered 4xx. The
default run is derandomized (the same cases each time, so a failure reproduces); ``make fuzz`` runs a
long random campaign through the same test (``NCOMPASS_FUZZ_EXAMPLES``, ``NCOMPASS_FUZZ_RANDOM=1``).
Every failure found is kept below as a regular test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from .conftest import KEY, ServerProcess

EXAMPLES = int(os.environ.get("NCOMPASS_FUZZ_EXAMPLES", "50"))
RANDOM = os.environ.get("NCOMPASS_FUZZ_RANDOM") == "1"
# Operations that take no input at all: hypothesis has nothing to vary, so they get one case each.
NO_INPUT = {
    "GET /health",
    "GET /v1/models",
    "GET /v1/deployment",
    "POST /v1/deployment/start",
    "POST /v1/deployment/stop",
    "GET /v1/deployment/bookings",
}
# Operations whose every input is free-form: no value of them is invalid, so nothing can be negated.
NOTHING_TO_NEGATE = {*NO_INPUT, "GET /v1/models/{model_id}"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    proc = ServerProcess(log, "--api-key", KEY, "--db", ":memory:", "--log-level", "warning")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def schema(fuzz_server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


def _operations() -> list[str]:
    # Read from the app itself at collection time, so an operation added later joins the run.
    from ncompass_openai.server import ServerSettings, create_app

    app = create_app(ServerSettings(engine="synthetic", db=":memory:", api_keys=["collect"]))
    try:
        spec = app.openapi()
    finally:
        app.state.server.db.close()
    return [f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops]


OPERATIONS = _operations()


def _documented_503(response: Any) -> bool:
    if response.status_code != 503:
        return False
    code = response.json().get("error", {}).get("code")
    return code in ("model_starting", "model_stopped")


def _check_answer(response: Any, case: Any) -> None:
    assert response.status_code < 500 or _documented_503(response), (
        f"{case.operation.label} answered {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
        assert "param" in error and "code" in error


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_operation(label: str, mode: GenerationMode, schema: Any, fuzz_server: ServerProcess) -> None:
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    seen: list[int] = []
    checks = [response_schema_conformance]
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = "synthetic"  # the key's model, so generation itself is fuzzed
        headers = {"Authorization": f"Bearer {KEY}"}
        response = case.call(base_url=fuzz_server.url, headers=headers, timeout=30)
        seen.append(response.status_code)
        _check_answer(response, case)
        case.validate_response(response, checks=checks, headers=headers)

    if mode is GenerationMode.NEGATIVE and label in NOTHING_TO_NEGATE:
        with pytest.raises(Unsatisfiable):
            run()
        return
    run()
    assert fuzz_server.proc.poll() is None, "the server died:\n" + fuzz_server.output()
    wanted = 1 if label in NO_INPUT else EXAMPLES
    assert len(seen) >= wanted, f"{label} ({mode}): only {len(seen)} cases ran"
    if mode is GenerationMode.POSITIVE and "{" not in path:
        # Valid data must reach the route's real work, not only its error paths (an unknown id cannot).
        assert any(200 <= status < 300 for status in seen), f"{label}: no 2xx among {sorted(set(seen))}"


def test_every_operation_is_fuzzed() -> None:
    # The schema lists the routes the app serves; none may be left out of the run above.
    assert len(OPERATIONS) >= 17
    assert {"POST /v1/chat/completions", "POST /v1/sessions", "POST /v1/deployment/bookings"} <= set(
        OPERATIONS
    )
    assert set(OPERATIONS) >= NO_INPUT


# -- what the fuzzing found, kept as regular tests ---------------------------------------------------


@pytest.mark.parametrize("query", ["status=", "limit="])
def test_an_empty_list_filter_is_refused_not_ignored(query: str, make_server: Any, client: Any) -> None:
    srv = make_server()
    with client(srv) as http:
        answer = http.get(f"/v1/sessions?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == query.rstrip("=")


def test_a_message_without_content_renders(make_server: Any, client: Any) -> None:
    # Found as `'dict object' has no attribute 'content'` (a 400 from the chat template).
    srv = make_server()
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant"},
        {"role": "user", "content": "Go on"},
    ]
    with client(srv) as http:
        answer = http.post(
            "/v1/chat/completions", json={"model": "synthetic", "messages": messages, "max_tokens": 4}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


def test_a_blank_body_is_not_an_empty_one(make_server: Any, client: Any) -> None:
    # Found on Python 3.10's hypothesis: `POST /v1/sessions` with the body " " started a session.
    srv = make_server()
    with client(srv) as http:
        blank = http.post("/v1/sessions", content=b" ", headers={"Content-Type": "application/json"})
        empty = http.post("/v1/sessions", content=b"")
    assert blank.status_code == 400, blank.text
    assert empty.status_code == 201  # no body at all: a session with the defaults
