"""``GET /openapi.json`` and ``GET /docs``: the real schemas of every route, served without a key."""

from __future__ import annotations

from typing import Any

import pytest

from ncompass_openai.server.http._openapi import NO_BODY


@pytest.fixture
def spec(make_server: Any, client: Any) -> dict[str, Any]:
    srv = make_server()
    with client(srv, key=None) as http:
        answer = http.get("/openapi.json")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def test_every_route_has_request_and_response_schemas(spec: dict[str, Any]) -> None:
    operations = [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 17
    for path, method, op in operations:
        label = f"{method.upper()} {path}"
        successes = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert successes, f"{label} documents no success answer"
        for code, response in successes.items():
            schema = _resolve(spec, response["content"]["application/json"]["schema"])
            assert schema.get("properties"), f"{label} {code}: empty response schema"
        for name in (p.strip("{}") for p in path.split("/") if p.startswith("{")):
            params = {p["name"]: p for p in op.get("parameters", [])}
            assert params[name]["schema"], f"{label}: path parameter {name} has no schema"
        if method == "post" and op.get("x-request-body") != NO_BODY["x-request-body"]:
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert _resolve(spec, body).get("properties"), f"{label}: empty request schema"
        if path != "/health":
            assert "401" in op["responses"], f"{label} does not document its 401"
        assert "422" not in op["responses"]  # this server answers 400, never 422


def test_request_schemas_are_the_models_the_routes_validate_with(spec: dict[str, Any]) -> None:
    from ncompass_openai.server.protocol._schemas import ChatCompletionRequest

    chat = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    served = _resolve(spec, chat["schema"])
    assert set(served["properties"]) == set(ChatCompletionRequest.model_fields)
    assert served.get("additionalProperties") is False  # unknown fields are refused, and the schema says so


def test_docs_page_needs_no_key(make_server: Any, client: Any) -> None:
    srv = make_server()
    with client(srv, key=None) as http:
        answer = http.get("/docs")
    assert answer.status_code == 200
    assert "/openapi.json" in answer.text


def test_an_unknown_route_points_at_what_the_server_serves(make_server: Any, client: Any) -> None:
    srv = make_server()
    with client(srv) as http:
        answer = http.get("/v1/nothing-here")
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert "GET /openapi.json" in message and "PROTOCOL" not in message
