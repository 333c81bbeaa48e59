"""The OpenAI surface over real sockets, with the plain openai client and raw HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from ncompass_openai._compat import httpx


@pytest.fixture
def oai(base_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0)


@pytest.fixture
def raw(server: Any, api_key: str) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10) as c:
        yield c


def _model(oai: openai.OpenAI) -> str:
    return oai.models.list().data[0].id


def test_health_needs_no_key(server: Any) -> None:
    response = httpx.get(server.url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_models_lists_the_tenant_model(oai: openai.OpenAI) -> None:
    models = oai.models.list()
    assert len(models.data) == 1
    card = models.data[0]
    assert card.object == "model"
    assert card.owned_by == "ncompass"
    assert oai.models.retrieve(card.id).id == card.id


def test_completion_structure_and_usage(oai: openai.OpenAI) -> None:
    result = oai.completions.create(model=_model(oai), prompt="Say hi", max_tokens=5)
    assert result.object == "text_completion"
    assert result.id.startswith("cmpl-")
    assert len(result.choices) == 1
    assert result.choices[0].finish_reason == "length"
    assert result.choices[0].text
    assert result.usage is not None
    assert result.usage.completion_tokens == 5
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + 5


def test_list_prompt_is_one_batch_with_n(oai: openai.OpenAI) -> None:
    prompts = ["one", "two two", "three three three"]
    result = oai.completions.create(model=_model(oai), prompt=prompts, max_tokens=3, n=2, seed=7)
    assert [c.index for c in result.choices] == list(range(6))
    assert all(c.finish_reason == "length" for c in result.choices)
    assert result.usage is not None
    assert result.usage.completion_tokens == 18


def test_seed_makes_completions_repeatable(oai: openai.OpenAI) -> None:
    first = oai.completions.create(model=_model(oai), prompt="seeded", max_tokens=8, seed=42)
    second = oai.completions.create(model=_model(oai), prompt="seeded", max_tokens=8, seed=42)
    assert first.choices[0].text == second.choices[0].text


def test_echo_prepends_the_prompt(oai: openai.OpenAI) -> None:
    result = oai.completions.create(model=_model(oai), prompt="Echo me:", max_tokens=3, echo=True)
    assert result.choices[0].text.startswith("Echo me:")
    assert len(result.choices[0].text) > len("Echo me:")


def test_stop_string_ends_with_stop(oai: openai.OpenAI) -> None:
    plain = oai.completions.create(model=_model(oai), prompt="stops", max_tokens=12, temperature=0)
    text = plain.choices[0].text
    word = text.split()[2]
    cut = oai.completions.create(model=_model(oai), prompt="stops", max_tokens=12, temperature=0, stop=[word])
    assert cut.choices[0].finish_reason == "stop"
    assert word not in cut.choices[0].text
    assert text.startswith(cut.choices[0].text)


def test_completion_stream_with_usage_last(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.completions.create(
            model=_model(oai),
            prompt="stream",
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    body = chunks[:-1]
    assert all(c.object == "text_completion" and c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in body[:-1])


def test_chat_completion(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(
        model=_model(oai), messages=[{"role": "user", "content": "Hello"}], max_tokens=6, n=2
    )
    assert result.object == "chat.completion"
    assert [c.index for c in result.choices] == [0, 1]
    for choice in result.choices:
        assert choice.message.role == "assistant"
        assert choice.message.content
        assert choice.finish_reason == "length"
    assert result.usage is not None
    assert result.usage.completion_tokens == 12


def test_chat_stream_chunks(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=_model(oai),
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_raw_stream_ends_with_done(raw: httpx.Client, oai: openai.OpenAI) -> None:
    body = {"model": _model(oai), "prompt": "x", "max_tokens": 2, "stream": True}
    with raw.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    for line in events[:-1]:
        assert json.loads(line.removeprefix("data: "))["object"] == "text_completion"


def test_continue_final_message(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(
        model=_model(oai),
        messages=[{"role": "user", "content": "Count"}, {"role": "assistant", "content": "one two"}],
        max_tokens=3,
        extra_body={"add_generation_prompt": False, "continue_final_message": True},
    )
    assert result.choices[0].finish_reason == "length"


def test_custom_chat_template_and_kwargs(oai: openai.OpenAI) -> None:
    template = "{% for m in messages %}{{ prefix }}{{ m['content'] }}{% endfor %}"
    result = oai.chat.completions.create(
        model=_model(oai),
        messages=[{"role": "user", "content": "a b c"}],
        max_tokens=2,
        extra_body={"chat_template": template, "chat_template_kwargs": {"prefix": "> "}},
    )
    same = oai.completions.create(model=_model(oai), prompt="> a b c", max_tokens=1)
    assert result.usage is not None and same.usage is not None
    # The template rendered exactly "> a b c": the same prompt as a plain completion.
    assert result.usage.prompt_tokens == same.usage.prompt_tokens


def test_vllm_sampling_extras_accepted(oai: openai.OpenAI) -> None:
    result = oai.completions.create(
        model=_model(oai),
        prompt="extras",
        max_tokens=2,
        extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1},
    )
    assert len(result.choices) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"min_tokens": -1}, "greater than or equal to 0"),
        ({"min_tokens": 9, "max_tokens": 8}, "token limit (8)"),
        ({"min_tokens": "many"}, "valid integer"),
    ],
)
@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_min_tokens_out_of_range_is_a_400_naming_it(
    raw: httpx.Client, route: str, body: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"model": "synthetic", "max_tokens": 8}
    base |= (
        {"prompt": "hi"} if route == "/v1/completions" else {"messages": [{"role": "user", "content": "hi"}]}
    )
    answer = raw.post(route, json={**base, **body})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "min_tokens" and message in error["message"], error


def test_min_tokens_up_to_max_tokens_is_honoured(raw: httpx.Client) -> None:
    body = {"model": "synthetic", "prompt": "hi", "max_tokens": 5, "min_tokens": 5}
    answer = raw.post("/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_hangs_up_frees_its_queue_place(make_server: Any, client: Any, stream: bool) -> None:
    from ncompass_openai.server.engines.synthetic import SyntheticEngine

    srv = make_server(max_queue_per_key=1, engine_instance=SyntheticEngine(delay=0.02))
    slow = {"model": "synthetic", "prompt": "long", "max_tokens": 1000, "stream": stream}
    quick = {"model": "synthetic", "prompt": "next", "max_tokens": 2}
    with client(srv) as c:
        if stream:
            with c.stream("POST", "/v1/completions", json=slow) as response:
                assert response.status_code == 200
                next(response.iter_lines())
        else:
            with pytest.raises(httpx.ReadTimeout), client(srv, timeout=0.3) as impatient:
                impatient.post("/v1/completions", json=slow)
        # 1000 tokens would take 20 s; the place is free at once instead.
        deadline = time.monotonic() + 2.0
        while True:
            answer = c.post("/v1/completions", json=quick)
            if answer.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.status_code == 200
        assert srv.state.backend.inflight(srv.state.tenants.tenants[0].id) == 0


def test_a_fast_stream_abandoned_by_its_client_stops_at_once(
    make_server: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # No delay: tokens are buffered faster than they are sent, the case where a writer that never
    # suspends would keep the event loop from noticing the hang-up until the whole answer was written.
    srv = make_server(max_queue_per_key=1)
    huge = {"model": "synthetic", "prompt": "long", "max_tokens": 500_000, "stream": True}
    with client(srv) as c:
        with c.stream("POST", "/v1/completions", json=huge) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        hung_up = time.monotonic()
        while (
            answer := c.post("/v1/completions", json={"model": "synthetic", "prompt": "next"})
        ).status_code == 429:
            assert time.monotonic() - hung_up < 1.0, "the abandoned stream still holds the queue place"
            time.sleep(0.01)
        assert answer.status_code == 200
    assert "socket.send() raised exception" not in caplog.text
