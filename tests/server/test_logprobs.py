"""``logprobs`` on the real model: OpenAI's chat shape and the legacy completions shape, streamed and not
(tokens concatenate to the text, ``top_logprobs`` sorted, probabilities at most 1); bad values a 400."""

from __future__ import annotations

import math
from typing import Any

import httpx
import openai
import pytest

QUESTION = [{"role": "user", "content": "Name three fruits."}]


def _check_entries(entries: list[Any], top: int) -> None:
    assert entries
    for entry in entries:
        assert entry.logprob <= 0 and math.exp(entry.logprob) <= 1
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        alternatives = [alt.logprob for alt in entry.top_logprobs]
        assert len(alternatives) == top and alternatives == sorted(alternatives, reverse=True)
        if top:
            assert entry.logprob <= alternatives[0] + 1e-6  # nothing beats the most likely token


@pytest.mark.model
def test_chat_logprobs_shape_and_invariants(real: openai.OpenAI, real_model: str) -> None:
    answer = real.chat.completions.create(
        model=real_model,
        messages=QUESTION,
        logprobs=True,
        top_logprobs=5,
        max_tokens=20,
        seed=0,  # type: ignore[arg-type]
    )
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    _check_entries(choice.logprobs.content, 5)
    assert "".join(e.token for e in choice.logprobs.content) == choice.message.content
    assert len(choice.logprobs.content) == answer.usage.completion_tokens - (choice.finish_reason == "stop")  # type: ignore[union-attr]


@pytest.mark.model
def test_greedy_picks_the_most_likely_token(real: openai.OpenAI, real_model: str) -> None:
    answer = real.chat.completions.create(
        model=real_model,
        messages=QUESTION,
        logprobs=True,
        top_logprobs=1,
        max_tokens=10,
        temperature=0,  # type: ignore[arg-type]
    )
    for entry in answer.choices[0].logprobs.content:  # type: ignore[union-attr]
        assert entry.token == entry.top_logprobs[0].token


@pytest.mark.model
def test_streamed_chat_logprobs_equal_the_whole_answer(real: openai.OpenAI, real_model: str) -> None:
    fields: dict[str, Any] = {"model": real_model, "messages": QUESTION, "logprobs": True, "top_logprobs": 2}
    whole = real.chat.completions.create(**fields, max_tokens=20, seed=1)
    entries: list[Any] = []
    text = []
    for chunk in real.chat.completions.create(**fields, max_tokens=20, seed=1, stream=True):
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            if choice.logprobs is not None:
                entries.extend(choice.logprobs.content or [])
    _check_entries(entries, 2)
    assert "".join(text) == whole.choices[0].message.content
    assert [(e.token, e.logprob) for e in entries] == [
        (e.token, e.logprob)
        for e in whole.choices[0].logprobs.content  # type: ignore[union-attr]
    ]


@pytest.mark.model
def test_chat_logprobs_without_top_logprobs(real: openai.OpenAI, real_model: str) -> None:
    answer = real.chat.completions.create(
        model=real_model, messages=QUESTION, logprobs=True, max_tokens=5, seed=0
    )  # type: ignore[arg-type]
    _check_entries(answer.choices[0].logprobs.content, 0)  # type: ignore[union-attr, arg-type]


@pytest.mark.model
def test_completion_logprobs_legacy_shape(real: openai.OpenAI, real_model: str) -> None:
    answer = real.completions.create(model=real_model, prompt="The sky is", logprobs=3, max_tokens=8, seed=0)
    choice = answer.choices[0]
    lp = choice.logprobs
    assert (
        lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset is not None
    )
    assert "".join(lp.tokens) == choice.text
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:k]) for k in range(len(lp.tokens))]
    for value, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert value is not None and value <= 0
        assert len(top) == 3 and list(top.values()) == sorted(top.values(), reverse=True)

    streamed = real.completions.create(
        model=real_model, prompt="The sky is", logprobs=3, max_tokens=8, seed=0, stream=True
    )
    tokens: list[str] = []
    offsets: list[int] = []
    for chunk in streamed:
        if chunk.choices[0].logprobs is not None:
            tokens.extend(chunk.choices[0].logprobs.tokens or [])
            offsets.extend(chunk.choices[0].logprobs.text_offset or [])
    assert tokens == lp.tokens and offsets == lp.text_offset


@pytest.fixture
def raw(server: Any, api_key: str) -> Any:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    ) as client:
        yield client


CHAT = {"model": "synthetic", "messages": QUESTION, "max_tokens": 3}
COMPLETION = {"model": "synthetic", "prompt": "hi", "max_tokens": 3}


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs", "20"),
        ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, "top_logprobs", "logprobs: true"),
        ("/v1/chat/completions", {**CHAT, "logprobs": True}, "logprobs", "synthetic engine"),
        ("/v1/completions", {**COMPLETION, "logprobs": 6}, "logprobs", "5"),
        ("/v1/completions", {**COMPLETION, "logprobs": 2, "echo": True}, "logprobs", "echo"),
        ("/v1/completions", {**COMPLETION, "logprobs": 0}, "logprobs", "synthetic engine"),
    ],
)
def test_bad_logprobs_are_a_400_naming_the_field(
    raw: httpx.Client, path: str, body: dict[str, Any], param: str, words: str
) -> None:
    answer = raw.post(path, json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and words in error["message"], error
