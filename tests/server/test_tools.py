"""Function tools on ``/v1/chat/completions`` with the real model: every ``tool_choice``, streamed and not
(one streaming-invariant checker), a full round trip, ``parallel_tool_calls``, ``auto`` answers valid over
prompts that call for a tool and prompts that do not, and the bad inputs a 400 names."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

DATA = json.loads((Path(__file__).parents[1] / "data" / "tool_prompts.json").read_text())
WEATHER, TIME = DATA["tools"]  # get_weather(city, unit) and get_time(zone)
TOOLS = [WEATHER, TIME]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}  # type: ignore[index]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
MAX_TOKENS = 120  # a call needs under 60; a rambling text answer stops here


def _valid_calls(calls: list[Any], names: set[str]) -> None:
    assert calls
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function" and call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])


def _check_stream(chunks: list[Any]) -> dict[str, Any]:
    """OpenAI's streaming invariants; returns the reassembled message and finish reason."""
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the usage chunk comes last
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for k, chunk in enumerate(chunks[:-1]):
        assert chunk.usage is None
        (choice,) = chunk.choices
        delta = choice.delta
        assert (delta.role == "assistant") == (k == 0)
        assert delta.content != "" or k == 0, (
            "an empty content delta"
        )  # OpenAI's head of a text stream has one
        if delta.content:
            content.append(delta.content)
        for call in delta.tool_calls or []:
            if call.index not in calls:  # a call's first delta carries its id, type and name
                assert (
                    call.id and call.id.startswith("call_") and call.type == "function" and call.function.name
                )
                calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
            else:
                assert call.id is None and call.function.name is None
            calls[call.index]["arguments"] += call.function.arguments or ""
        if choice.finish_reason is not None:
            assert finish is None
            finish = choice.finish_reason
    return {"content": "".join(content) or None, "calls": [calls[k] for k in sorted(calls)], "finish": finish}


def _both(real: openai.OpenAI, real_model: str, **fields: Any) -> tuple[Any, dict[str, Any]]:
    """The same request (same seed) streamed and not."""
    whole = real.chat.completions.create(model=real_model, max_tokens=MAX_TOKENS, seed=3, **fields)
    chunks = list(
        real.chat.completions.create(
            model=real_model,
            max_tokens=MAX_TOKENS,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
            **fields,
        )
    )
    return whole.choices[0], _check_stream(chunks)


def _same(choice: Any, streamed: dict[str, Any]) -> None:
    assert streamed["finish"] == choice.finish_reason
    assert streamed["content"] == choice.message.content
    calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert [(c["name"], c["arguments"]) for c in streamed["calls"]] == calls


@pytest.mark.model
@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_time"}}],
    ids=["required", "named"],
)
def test_required_and_named_choices_always_call(
    real: openai.OpenAI, real_model: str, tool_choice: Any
) -> None:
    choice, streamed = _both(real, real_model, messages=ASK, tools=TOOLS, tool_choice=tool_choice)
    names = {"get_time"} if isinstance(tool_choice, dict) else {"get_weather", "get_time"}
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    _valid_calls(choice.message.tool_calls, names)
    _same(choice, streamed)


@pytest.mark.model
def test_arguments_hold_only_the_listed_keys_when_the_schema_is_silent_on_others(
    real: openai.OpenAI, real_model: str
) -> None:
    # Without `additionalProperties`, this model once wrote the schema's own keywords as extra arguments
    # ({"input": 3, "exclusiveMaximum": 1000, ...}) until the token limit: listed keys only, now.
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "integer", "exclusiveMinimum": -1000, "exclusiveMaximum": 1000}},
        "required": ["input"],
    }
    tool = {"type": "function", "function": {"name": "magic_function", "parameters": parameters}}
    answer = real.chat.completions.create(
        model=real_model,
        messages=[{"role": "user", "content": "What is the value of magic_function(3)? Use the tool."}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=MAX_TOKENS,
    )
    (call,) = answer.choices[0].message.tool_calls or []
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"input"}
    jsonschema.validate(arguments, parameters)


@pytest.mark.model
def test_auto_yields_valid_text_or_a_valid_call(real: openai.OpenAI, real_model: str) -> None:
    choice, streamed = _both(real, real_model, messages=ASK, tools=TOOLS, tool_choice="auto")
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        _valid_calls(choice.message.tool_calls, {"get_weather", "get_time"})
    else:  # a plain answer: its text, ended by the model or cut by the token limit
        assert choice.finish_reason in ("stop", "length") and choice.message.content
    _same(choice, streamed)


@pytest.mark.model
def test_none_answers_in_text(real: openai.OpenAI, real_model: str) -> None:
    choice, streamed = _both(real, real_model, messages=ASK, tools=TOOLS, tool_choice="none")
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    _same(choice, streamed)


_CHOICES = ["required", {"type": "function", "function": {"name": "get_weather"}}, "auto"]
_FORMAT_HEADS = ('{"tool_calls"', '{"response"', '{"tool', '{"resp', '{"')  # a cut head too


def _answers(
    real: openai.OpenAI, real_model: str, choice: Any, stream: bool, budget: int, n: int
) -> list[Any]:
    """``n`` sampled answers at temperature 1 as ``(content, calls, finish)``, reassembled when streamed."""
    fields: dict[str, Any] = {
        "model": real_model, "messages": ASK, "tools": TOOLS, "tool_choice": choice, "max_tokens": budget,
        "n": n, "temperature": 1.0,  # no seed: a seeded sequence decodes its whole prompt again
    }  # fmt: skip
    if not stream:
        answer = real.chat.completions.create(**fields)
        return [
            (c.message.content, [(t.function.name, t.function.arguments) for t in c.message.tool_calls or []],
             c.finish_reason)
            for c in answer.choices
        ]  # fmt: skip
    chunks = list(real.chat.completions.create(stream=True, **fields))
    by_index: dict[int, Any] = {}
    for chunk in chunks:
        for c in chunk.choices:
            content, calls, finish = by_index.setdefault(c.index, ["", {}, None])
            by_index[c.index][0] = content + (c.delta.content or "")
            for t in c.delta.tool_calls or []:
                name, arguments = calls.get(t.index, ("", ""))
                calls[t.index] = (name + (t.function.name or ""), arguments + (t.function.arguments or ""))
            by_index[c.index][2] = c.finish_reason or finish
    return [(a[0] or None, [a[1][k] for k in sorted(a[1])], a[2]) for _, a in sorted(by_index.items())]


@pytest.mark.model
def test_the_tool_format_never_reaches_a_client_whatever_cuts_it(
    real: openai.OpenAI, real_model: str
) -> None:
    # 216 sampled answers: 3 choices x streamed or not x 3 budgets x n=12, from a budget that cuts every
    # answer inside its first call to one that holds a call several times over.
    seen: dict[str, int] = {"calls": 0, "cut_with_calls": 0, "text": 0, "empty": 0}
    cases = [(c, s, b) for c in _CHOICES for s in (False, True) for b in (6, 16, 60)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the engine batches them, as clients' would be
        answers = list(pool.map(lambda case: _answers(real, real_model, *case, 12), cases))
    for (choice, _, _), sampled in zip(cases, answers, strict=True):
        for content, calls, finish in sampled:
            assert content is None or not content.lstrip().startswith(_FORMAT_HEADS), content
            assert len(set(calls)) == len(calls)  # no call made twice
            for name, arguments in calls:
                jsonschema.validate(json.loads(arguments), PARAMETERS[name])
            if calls:
                assert content is None and finish in ("tool_calls", "length")
                seen["cut_with_calls" if finish == "length" else "calls"] += 1
            else:
                assert finish in ("stop", "length")
                seen["text" if content else "empty"] += 1
            if isinstance(choice, dict):
                assert len(calls) <= 1 and all(name == "get_weather" for name, _ in calls)
    assert sum(seen.values()) == 216 and seen["calls"] > 0, seen


def test_a_call_list_ends_at_a_repeated_call_and_before_a_call_the_budget_cannot_hold() -> None:
    from ncompass_openai.server.backends.local._tools import CallListWatch, parse_answer

    call = '{"name":"get_weather","arguments":{"city":"Paris"}}'
    other = '{"name":"get_weather","arguments":{"city":"Rome"}}'
    answer = '{"tool_calls":[' + call + "," + other + "," + call

    def first_end(watch: CallListWatch) -> int:  # one character a token
        return next(k for k in range(len(answer)) if watch(answer[k], k + 1))

    # the repeated call ends the list the moment it is whole
    assert first_end(CallListWatch(max_tokens=200, max_calls=4)) == len(answer) - 1
    content, calls = parse_answer(answer)
    assert content is None and [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')
    ]  # fmt: skip
    # 70 tokens: the first call costs 66, so a second one could only be cut: the list ends after the first
    assert first_end(CallListWatch(max_tokens=70, max_calls=4)) == len('{"tool_calls":[' + call) - 1
    # and so does the last call allowed
    assert (
        first_end(CallListWatch(max_tokens=200, max_calls=2))
        == len('{"tool_calls":[' + call + "," + other) - 1
    )
    # a cut inside the format's keys is no content at all, and a cut plain answer is its text so far
    assert parse_answer('{"tool_ca') == ("", [])
    assert parse_answer('{"response":"It is sun') == ("It is sun", [])
    assert parse_answer('{"tool_calls":[{"name":"get_weather","arguments":{"city":"Par') == ("", [])


@pytest.mark.model
def test_parallel_tool_calls_false_makes_exactly_one_call(real: openai.OpenAI, real_model: str) -> None:
    for seed in range(2):
        answer = real.chat.completions.create(
            model=real_model,
            messages=[{"role": "user", "content": "Weather in Paris and in Rome, and the time in Tokyo?"}],
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=MAX_TOKENS,
            seed=seed,
        )
        calls = answer.choices[0].message.tool_calls
        assert calls is not None and len(calls) == 1
        _valid_calls(calls, {"get_weather", "get_time"})


@pytest.mark.model
def test_parallel_calls_are_each_valid_with_distinct_ids(real: openai.OpenAI, real_model: str) -> None:
    seen = 0
    for seed in range(2):
        answer = real.chat.completions.create(
            model=real_model,
            messages=[{"role": "user", "content": "Call get_weather for Paris, then get_weather for Rome."}],
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice="required",
            max_tokens=MAX_TOKENS,
            seed=seed,
        )
        calls = answer.choices[0].message.tool_calls or []
        _valid_calls(calls, {"get_weather", "get_time"})
        assert len({c.id for c in calls}) == len(calls)
        seen = max(seen, len(calls))
    assert seen >= 1


@pytest.mark.model
def test_a_full_round_trip(real: openai.OpenAI, real_model: str) -> None:
    first = real.chat.completions.create(
        model=real_model,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=MAX_TOKENS,
        seed=0,  # type: ignore[arg-type]
    )
    message = first.choices[0].message
    assert message.tool_calls
    call = message.tool_calls[0]
    history = [
        *ASK,
        message.model_dump(exclude_none=True),  # the assistant's tool_calls, content null
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"weather": "sunny", "celsius": 21})},
    ]
    second = real.chat.completions.create(
        model=real_model,
        messages=history,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=60,
        seed=0,  # type: ignore[arg-type]
    )
    assert second.choices[0].message.content and second.choices[0].message.tool_calls is None
    assert message.content is None  # the history held `content: null`, which rendered


@pytest.mark.model
def test_auto_answers_are_valid_text_or_valid_calls(model_server: Any, api_key: str) -> None:
    """A few prompts of each kind (bench/tools_auto.py runs all 40 and reports how the model splits)."""

    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(
            base_url=model_server.base_url, api_key=api_key, max_retries=0
        ) as client:

            async def one(prompt: str) -> Any:
                answer = await client.chat.completions.create(
                    model="SmolLM2-135M-Instruct",
                    messages=[{"role": "user", "content": prompt}],
                    tools=TOOLS,  # type: ignore[arg-type]
                    max_tokens=MAX_TOKENS,
                    seed=0,
                )
                return answer.choices[0]

            prompts = DATA["call"][:3] + DATA["text"][:3]
            return list(await asyncio.gather(*(one(p) for p in prompts)))

    for choice in asyncio.run(run()):
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            _valid_calls(choice.message.tool_calls, {"get_weather", "get_time"})
        else:
            assert choice.finish_reason in ("stop", "length") and choice.message.content, choice


# -- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def raw(server: Any, api_key: str) -> Any:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    ) as client:
        yield client


def _bad(tools: Any = None, **fields: Any) -> dict[str, Any]:
    body = {"model": "synthetic", "messages": ASK, **fields}
    if tools is not None:
        body["tools"] = tools
    return body


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            _bad(TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}),
            "tool_choice",
            "not one of",
        ),
        (_bad(tool_choice="required"), "tool_choice", "no `tools`"),
        (_bad([WEATHER, WEATHER]), "tools", "unique"),
        (_bad([{"type": "web_search"}]), "tools", ""),
        (_bad([{"type": "function", "function": {"name": "bad name"}}]), "tools", ""),
        (_bad(TOOLS, tool_choice="sometimes"), "tool_choice", ""),
        (_bad(functions=[WEATHER["function"]]), "functions", ""),
    ],
)
def test_bad_tools_are_a_400_naming_the_field(
    raw: httpx.Client, body: dict[str, Any], param: str, words: str
) -> None:
    answer = raw.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert str(error["param"]).startswith(param) and words in error["message"], error


def test_tools_on_the_synthetic_engine_are_refused_but_tool_choice_none_works(raw: httpx.Client) -> None:
    refused = raw.post("/v1/chat/completions", json=_bad(TOOLS))
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools"
    assert (
        raw.post("/v1/chat/completions", json=_bad(TOOLS, tool_choice="none", max_tokens=3)).status_code
        == 200
    )


@pytest.mark.model
def test_an_invalid_parameters_schema_is_a_400_naming_it(model_server: Any, api_key: str) -> None:
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "array", "uniqueItems": True}},
    }
    body = {"model": "SmolLM2-135M-Instruct", "messages": ASK, "tools": [tool]}
    headers = {"Authorization": f"Bearer {api_key}"}
    answer = httpx.post(f"{model_server.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "tools[0].function.parameters" and "uniqueItems" in error["message"]


@pytest.mark.parametrize(
    "template",
    [None, "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"],
    ids=["default", "request-template"],
)
def test_history_with_tool_calls_and_tool_results_renders(raw: httpx.Client, template: str | None) -> None:
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    answer = raw.post(
        "/v1/chat/completions", json={"model": "synthetic", "messages": history, "max_tokens": 3}
    )
    assert answer.status_code == 200, answer.text
