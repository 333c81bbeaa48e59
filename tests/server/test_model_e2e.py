"""The plain openai client against the local server running the real SmolLM2 model (llama engine)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.model

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def client(model_server: Any, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=model_server.base_url, api_key=api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    models = client.models.list().data
    assert len(models) == 1
    return models[0].id


def test_completion(client: openai.OpenAI, model: str) -> None:
    result = client.completions.create(model=model, prompt="The sky is", max_tokens=MAX_TOKENS, seed=7)
    assert result.object == "text_completion"
    assert result.model == model
    assert len(result.choices) == 1
    choice = result.choices[0]
    assert choice.index == 0
    assert isinstance(choice.text, str)
    assert choice.finish_reason in ("stop", "length")
    assert result.usage is not None
    assert result.usage.prompt_tokens > 0
    assert 1 <= result.usage.completion_tokens <= MAX_TOKENS
    if choice.finish_reason == "length":
        assert result.usage.completion_tokens == MAX_TOKENS
    # Same seed, same answer: compared run to run, never to a fixed text.
    again = client.completions.create(model=model, prompt="The sky is", max_tokens=MAX_TOKENS, seed=7)
    assert again.choices[0].text == choice.text


def test_streamed_completion_counts_match_usage(client: openai.OpenAI, model: str) -> None:
    stream = client.completions.create(
        model=model,
        prompt="Once upon a time",
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = 0
    finish: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        assert usage is None  # the usage chunk comes last
        assert len(chunk.choices) == 1
        pieces += 1
        if chunk.choices[0].finish_reason is not None:
            finish.append(chunk.choices[0].finish_reason)
    assert usage is not None
    assert finish in (["stop"], ["length"])
    assert usage.completion_tokens == pieces <= MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_list_prompt_is_one_batch(client: openai.OpenAI, model: str) -> None:
    prompts = ["Paris is", "Water is", "Cats are"]
    result = client.completions.create(model=model, prompt=prompts, max_tokens=MAX_TOKENS, n=2, seed=1)
    assert sorted(c.index for c in result.choices) == list(range(6))
    assert all(c.finish_reason in ("stop", "length") for c in result.choices)
    assert result.usage is not None
    assert result.usage.completion_tokens <= 6 * MAX_TOKENS
    # Streamed: every index ends exactly once.
    stream = client.completions.create(model=model, prompt=prompts, max_tokens=MAX_TOKENS, stream=True)
    ends = Counter(c.choices[0].index for c in stream if c.choices and c.choices[0].finish_reason)
    assert ends == Counter({0: 1, 1: 1, 2: 1})


def test_chat_completion_and_stream(client: openai.OpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "Say hello."}]
    result = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS)
    assert result.object == "chat.completion"
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert result.usage is not None
    assert result.usage.prompt_tokens > 5  # the model's template wraps the message in chat markers
    assert result.usage.completion_tokens <= MAX_TOKENS

    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    content = 0
    finish = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content is not None:
                content += 1
            if c.finish_reason is not None:
                finish.append(c.finish_reason)
    assert finish in (["stop"], ["length"])
    assert usage is not None
    assert usage.completion_tokens <= MAX_TOKENS
    assert content <= usage.completion_tokens + 1
