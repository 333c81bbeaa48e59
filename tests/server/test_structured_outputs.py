"""``response_format`` on ``/v1/chat/completions``: JSON objects and JSON schemas enforced by constrained
decoding on the real model (every answer of the schema corpus validates), ``parse()`` into Pydantic models
sync and async, streamed and not, and schemas the server cannot enforce refused with a 400 naming them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from ncompass_openai import AsyncNCompass, NCompass

CORPUS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "data" / "json_schemas.json").read_text()
)
SEEDS = (0, 1, 2)
MAX_TOKENS = 300  # far above what any corpus answer needs: hitting it counts as a failure
CONCURRENCY = 8  # the server's per-key queue: as many in flight as it batches


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{prompt} Answer in JSON."}]


def _schema_format(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": item["name"], "schema": item["schema"], "strict": True},
    }


def _validate(text: str, schema: dict[str, Any]) -> None:
    jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())


# -- the schema corpus on the real model ------------------------------------------------------------


def test_the_corpus_covers_every_keyword_the_issue_lists() -> None:
    text = json.dumps([item["schema"] for item in CORPUS])
    for keyword in (
        "properties", "required", "additionalProperties", "enum", "const", "anyOf", "$ref", "$defs",
        "items", "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "pattern",
    ):  # fmt: skip
        assert f'"{keyword}"' in text, keyword
    for value in (
        "string",
        "number",
        "integer",
        "boolean",
        "array",
        "object",
        "null",
        "date",
        "date-time",
        "uuid",
    ):
        assert f'"{value}"' in text, value
    assert len(CORPUS) >= 30


@pytest.fixture(scope="module")
def corpus_answers(model_server: Any, api_key: str) -> dict[tuple[str, int], Any]:
    """Every corpus schema with every seed, sent concurrently so the server decodes them as batches."""

    async def run() -> dict[tuple[str, int], Any]:
        client = openai.AsyncOpenAI(
            base_url=model_server.base_url, api_key=api_key, max_retries=0, timeout=300
        )
        model = (await client.models.list()).data[0].id
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(item: dict[str, Any], seed: int) -> tuple[tuple[str, int], Any]:
            async with gate:
                answer = await client.chat.completions.create(
                    model=model,
                    messages=_messages(item["prompt"]),  # type: ignore[arg-type]
                    response_format=_schema_format(item),  # type: ignore[arg-type]
                    max_tokens=MAX_TOKENS,
                    seed=seed,
                )
            return (item["name"], seed), answer.choices[0]

        try:
            pairs = await asyncio.gather(*(one(item, seed) for item in CORPUS for seed in SEEDS))
        finally:
            await client.close()
        return dict(pairs)

    return asyncio.run(run())


@pytest.mark.model
@pytest.mark.parametrize("item", CORPUS, ids=[item["name"] for item in CORPUS])
def test_every_corpus_answer_stops_and_validates(
    corpus_answers: dict[tuple[str, int], Any], item: Any
) -> None:
    for seed in SEEDS:
        choice = corpus_answers[(item["name"], seed)]
        assert choice.finish_reason == "stop", (seed, choice.message.content)
        _validate(choice.message.content, item["schema"])


@pytest.mark.model
def test_json_object_is_always_one_json_object(real: openai.OpenAI) -> None:
    """Every answer that ends is one JSON object; greedy answers to short questions end.

    "Any object" has no bound a 135M model knows to stop at: sampled, it may ramble to the token limit
    (then the text is a cut-off JSON prefix, ``finish_reason: "length"``, as OpenAI's would be). Greedy,
    the arithmetic of the CPU's kernels decides which way a close call goes (with and without llama.cpp's
    repacked weights one of these answers differs), so two of three greedy answers must end, not all.
    """
    model = real.models.list().data[0].id
    greedy_ended = 0
    for question in (
        "What is your favourite book? Give its title and author.",
        "Give a city and its country.",
        "What is 2 plus 2?",
    ):
        # Greedy with a seed: the server's promise of the same text again (without one, a greedy answer
        # may differ with where the prompt cache put its cells, as llama-server's and vLLM's do).
        for fields in ({"temperature": 0, "seed": 0}, {"seed": 0}):
            answer = real.chat.completions.create(
                model=model,
                messages=_messages(question),  # type: ignore[arg-type]
                response_format={"type": "json_object"},
                max_tokens=MAX_TOKENS,
                **fields,  # type: ignore[arg-type]
            )
            choice = answer.choices[0]
            if choice.finish_reason == "stop":
                assert isinstance(json.loads(str(choice.message.content)), dict), choice.message.content
                greedy_ended += "temperature" in fields
            else:
                assert choice.finish_reason == "length", choice.finish_reason
    assert greedy_ended >= 2


@pytest.mark.model
def test_constrained_and_free_sequences_decode_in_one_batch(model_server: Any, api_key: str) -> None:
    """A constrained request and an unconstrained one at once: each keeps its own grammar state."""
    item = CORPUS[0]

    async def run() -> tuple[Any, Any]:
        async with openai.AsyncOpenAI(
            base_url=model_server.base_url, api_key=api_key, max_retries=0
        ) as client:
            model = (await client.models.list()).data[0].id
            free = client.chat.completions.create(
                model=model,
                messages=_messages("Write a poem."),
                max_tokens=40,
                seed=1,  # type: ignore[arg-type]
            )
            bound = client.chat.completions.create(
                model=model,
                messages=_messages(item["prompt"]),  # type: ignore[arg-type]
                response_format=_schema_format(item),  # type: ignore[arg-type]
                max_tokens=MAX_TOKENS,
                seed=1,
            )
            return await asyncio.gather(free, bound)

    free, bound = asyncio.run(run())
    _validate(str(bound.choices[0].message.content), item["schema"])
    with pytest.raises(ValueError):  # the free answer is prose: the grammar did not leak into it
        json.loads(str(free.choices[0].message.content))


# -- parse() into Pydantic models -----------------------------------------------------------------


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population: int = Field(ge=0, le=50_000_000)
    kind: Literal["capital", "town"]


PARSE_MESSAGES = [{"role": "user", "content": "Describe Paris as JSON."}]


@pytest.fixture(scope="module")
def nc(model_server: Any, api_key: str) -> NCompass:
    return NCompass(api_key=api_key, base_url=model_server.base_url, max_retries=0, timeout=120)


@pytest.mark.model
def test_parse_into_a_pydantic_model_without_naming_the_model(nc: NCompass) -> None:
    answer = nc.chat.completions.parse(
        messages=PARSE_MESSAGES,  # type: ignore[arg-type]
        response_format=City,
        max_tokens=MAX_TOKENS,
        seed=0,
    )
    city = answer.choices[0].message.parsed
    assert isinstance(city, City) and answer.choices[0].finish_reason == "stop"


@pytest.mark.model
def test_stream_parses_into_a_pydantic_model(nc: NCompass) -> None:
    with nc.chat.completions.stream(
        messages=PARSE_MESSAGES,  # type: ignore[arg-type]
        response_format=City,
        max_tokens=MAX_TOKENS,
        seed=0,
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    city = final.choices[0].message.parsed
    assert isinstance(city, City) and len(deltas) > 1
    assert "".join(deltas) == final.choices[0].message.content


@pytest.mark.model
def test_async_parse_and_stream(model_server: Any, api_key: str) -> None:
    async def run() -> tuple[Any, Any]:
        async with AsyncNCompass(api_key=api_key, base_url=model_server.base_url, max_retries=0) as client:
            parsed = await client.chat.completions.parse(
                messages=PARSE_MESSAGES,  # type: ignore[arg-type]
                response_format=City,
                max_tokens=MAX_TOKENS,
                seed=1,
            )
            async with client.chat.completions.stream(
                messages=PARSE_MESSAGES,  # type: ignore[arg-type]
                response_format=City,
                max_tokens=MAX_TOKENS,
                seed=1,
            ) as stream:
                streamed = await stream.get_final_completion()
            return parsed, streamed

    parsed, streamed = asyncio.run(run())
    assert isinstance(parsed.choices[0].message.parsed, City)
    assert streamed.choices[0].message.parsed == parsed.choices[0].message.parsed  # same seed, same answer


# -- refusals ---------------------------------------------------------------------------------------


@pytest.fixture
def raw_model(model_server: Any, api_key: str) -> Any:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=model_server.url, headers=headers, timeout=30) as client:
        yield client


def _json_schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


@pytest.mark.model
@pytest.mark.parametrize(
    ("response_format", "param", "words"),
    [
        (
            _json_schema({"type": "array", "uniqueItems": True}),
            "response_format.json_schema.schema",
            "uniqueItems",
        ),
        (_json_schema({"not": {"type": "string"}}), "response_format.json_schema.schema", '"not"'),
        (
            _json_schema({"type": "string", "format": "no-such-format"}),
            "response_format.json_schema.schema",
            "format",
        ),
        (_json_schema({"type": "string", "pattern": "(["}), "response_format.json_schema.schema", "unclosed"),
        (_json_schema({"$ref": "#/$defs/missing"}), "response_format.json_schema.schema", "missing"),
        (_json_schema({"type": "bogus"}), "response_format.json_schema.schema", "bogus"),
        ({"type": "json_schema"}, "response_format.json_schema", "required"),
        (
            {"type": "json_object", "json_schema": {"name": "x"}},
            "response_format.json_schema",
            "only allowed",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}},
            "response_format",
            "name",
        ),
        ({"type": "yaml"}, "response_format", "type"),
    ],
)
def test_a_schema_that_cannot_be_enforced_is_a_400_naming_it(
    raw_model: httpx.Client, response_format: dict[str, Any], param: str, words: str
) -> None:
    body = {"model": "SmolLM2-135M-Instruct", "messages": _messages("hi"), "response_format": response_format}
    answer = raw_model.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"].startswith(param) and words in error["message"], error
    assert raw_model.get("/v1/models").status_code == 200  # the server stays up


def test_the_synthetic_engine_refuses_structured_outputs(server: Any, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    body = {"model": "synthetic", "messages": _messages("hi"), "response_format": {"type": "json_object"}}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        answer = client.post("/v1/chat/completions", json=body)
        text = client.post("/v1/chat/completions", json={**body, "response_format": {"type": "text"}})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "response_format" and "synthetic engine" in error["message"]
    assert text.status_code == 200


@pytest.mark.model
def test_legacy_complete_chat_passes_response_format_and_tools_through(
    model_server: Any, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ncompass_openai import nCompass

    monkeypatch.setenv("NCOMPASS_BASE_URL", model_server.base_url)
    with nCompass(api_key) as client:
        text = client.complete_chat(
            _messages(CORPUS[0]["prompt"]),
            response_format=_schema_format(CORPUS[0]),
            max_tokens=MAX_TOKENS,
            stream=False,
        )
        _validate(str(text), CORPUS[0]["schema"])
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        answered = client.complete_chat(_messages("Say hi."), tools=[tool], tool_choice="none", stream=False)
        assert isinstance(answered, str) and answered
