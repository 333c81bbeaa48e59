"""The Responses API (``/v1/responses``) on the real model (greedy where an answer must end within its limit:
the API has no seed): text, streamed event order, ``text.format`` enforced, ``parse`` with ``text_format``,
function tools, stored retrieval, ``previous_response_id``, deletion, another tenant's id a 404, and bad
input a 400 naming the field."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from ncompass_openai import AsyncNCompass, NCompass

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def nc(model_server: Any, api_key: str) -> NCompass:
    return NCompass(api_key=api_key, base_url=model_server.base_url, max_retries=0, timeout=120)


@pytest.mark.model
def test_create_without_a_model_returns_a_completed_response(nc: NCompass) -> None:
    response = nc.responses.create(input="Say hello.", instructions="Be brief.", max_output_tokens=20)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant"


EVENT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.mark.model
def test_stream_events_come_in_openai_order_with_sequence_numbers(nc: NCompass) -> None:
    events = list(
        nc.responses.create(input="Name a fruit.", max_output_tokens=200, temperature=0, stream=True)
    )
    kinds = [e.type for e in events]
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]  # deltas as one
    assert collapsed == EVENT_ORDER, kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == text and completed.usage.output_tokens > 0  # type: ignore[union-attr]


@pytest.mark.model
def test_stream_helper_gives_the_final_response(nc: NCompass) -> None:
    with nc.responses.stream(input="Name a colour.", max_output_tokens=400, temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text


class Pet(BaseModel):
    name: str = Field(max_length=20)
    species: str = Field(max_length=20)
    age: int = Field(ge=0, le=40)


@pytest.mark.model
def test_parse_with_text_format_and_json_schema_enforced(nc: NCompass) -> None:
    parsed = nc.responses.parse(input="Describe a pet as JSON.", text_format=Pet, max_output_tokens=200)
    assert isinstance(parsed.output_parsed, Pet)
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    raw = nc.responses.create(
        input="Is water wet?",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
        max_output_tokens=100,
    )
    jsonschema.validate(json.loads(raw.output_text), schema)


@pytest.mark.model
def test_async_create_parse_and_stream(model_server: Any, api_key: str) -> None:
    async def run() -> tuple[Any, Any, list[Any]]:
        async with AsyncNCompass(api_key=api_key, base_url=model_server.base_url, max_retries=0) as client:
            created = await client.responses.create(input="Say hi.", max_output_tokens=10)
            parsed = await client.responses.parse(
                input="A pet, as JSON.", text_format=Pet, max_output_tokens=200
            )
            async with client.responses.stream(
                input="Say hi.", max_output_tokens=200, temperature=0
            ) as stream:
                events = [event async for event in stream]
            return created, parsed, events

    created, parsed, events = asyncio.run(run())
    assert created.output_text and isinstance(parsed.output_parsed, Pet)
    assert events[-1].type in ("response.completed", "response.incomplete")  # a 135M model may ramble
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and events[-1].response.output_text == text


@pytest.mark.model
def test_function_tools_call_and_round_trip(nc: NCompass) -> None:
    first = nc.responses.create(
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_output_tokens=200,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])
    second = nc.responses.create(
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            calls[0].model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=40,
    )
    assert second.output_text


@pytest.mark.model
def test_streamed_function_call_events(nc: NCompass) -> None:
    events = list(
        nc.responses.create(
            input="Weather in Rome?",
            tools=[WEATHER],
            tool_choice="required",
            max_output_tokens=200,
            stream=True,  # type: ignore[list-item]
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-2:] == ["response.output_item.done", "response.completed"]
    dones = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert dones
    for done in dones:  # each call's pieces add up to its arguments
        pieces = [
            e.delta
            for e in events
            if e.type == "response.function_call_arguments.delta" and e.item_id == done.item_id
        ]
        assert "".join(pieces) == done.arguments and json.loads(done.arguments)


@pytest.mark.model
def test_stored_retrieval_previous_response_and_delete(nc: NCompass, model_server: Any) -> None:
    first = nc.responses.create(input="My name is Ada. Say OK.", max_output_tokens=10)
    assert nc.responses.retrieve(first.id).output_text == first.output_text
    follow = nc.responses.create(
        input="What is my name?", previous_response_id=first.id, max_output_tokens=10
    )
    assert follow.previous_response_id == first.id
    assert follow.usage is not None and first.usage is not None
    assert follow.usage.input_tokens > first.usage.input_tokens  # the first turn is part of the prompt
    unstored = nc.responses.create(input="Hi.", store=False, max_output_tokens=5)
    with pytest.raises(openai.NotFoundError):
        nc.responses.retrieve(unstored.id)
    nc.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        nc.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as caught:
        nc.responses.create(input="Again?", previous_response_id=first.id, max_output_tokens=5)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_another_tenants_response_is_a_404(server: Any, api_key: str, other_api_key: str) -> None:
    body = {"model": "synthetic", "input": "hi", "max_output_tokens": 3}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        mine = client.post("/v1/responses", json=body, headers={"Authorization": f"Bearer {api_key}"})
        assert mine.status_code == 200, mine.text
        response_id = mine.json()["id"]
        theirs = {"Authorization": f"Bearer {other_api_key}"}
        assert client.get(f"/v1/responses/{response_id}", headers=theirs).status_code == 404
        assert client.delete(f"/v1/responses/{response_id}", headers=theirs).status_code == 404
        follow = client.post(
            "/v1/responses", json={**body, "previous_response_id": response_id}, headers=theirs
        )
        assert follow.status_code == 404 and follow.json()["error"]["param"] == "previous_response_id"
        own = {"Authorization": f"Bearer {api_key}"}
        assert client.get(f"/v1/responses/{response_id}", headers=own).status_code == 200


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools", "built-in tool"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools", "built-in tool"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools", "built-in tool"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format", "synthetic engine"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format", "name` and `schema"),
        ({"tool_choice": "required"}, "tool_choice", "no `tools`"),
        ({"max_output_tokens": 0}, "max_output_tokens", ""),
        ({"reasoning": {"effort": "high"}}, "reasoning", ""),
        ({"input": [{"type": "image", "url": "x"}]}, "input", ""),
        ({"input": []}, "input", "empty"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    server: Any, api_key: str, fields: dict[str, Any], param: str, words: str
) -> None:
    body = {"model": "synthetic", "input": "hi", **fields}
    headers = {"Authorization": f"Bearer {api_key}"}
    answer = httpx.post(f"{server.url}/v1/responses", json=body, headers=headers, timeout=10)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert str(error["param"]).startswith(param) and words in error["message"], error
