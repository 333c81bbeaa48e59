"""OpenAI's ``presence_penalty``, ``frequency_penalty`` and ``logit_bias``: refused out of range, naming the
field; honoured by the llama engine (real model); ``logit_bias`` refused by an engine without token ids."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

COMPLETION = {"model": "synthetic", "prompt": "hi", "max_tokens": 3}


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"presence_penalty": 2.5}, "presence_penalty", "less than or equal to 2"),
        ({"frequency_penalty": -3}, "frequency_penalty", "greater than or equal to -2"),
        ({"logit_bias": {"abc": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "from -100 to 100"),
        ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias", "at most 300"),
        ({"logit_bias": {"5": 1}}, "logit_bias", "engine has none"),
    ],
)
def test_out_of_range_or_unhonourable_is_a_400_naming_the_field(
    raw: httpx.Client, fields: dict[str, Any], param: str, words: str
) -> None:
    answer = raw.post("/v1/completions", json={**COMPLETION, **fields})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_penalties_in_range_are_accepted(raw: httpx.Client) -> None:
    body = {**COMPLETION, "presence_penalty": -2, "frequency_penalty": 2}
    assert raw.post("/v1/completions", json=body).status_code == 200


@pytest.fixture
def raw(server: Any, api_key: str) -> Any:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10) as c:
        yield c


# -- the real model --------------------------------------------------------------------------------

PROMPT = "Q: What is the capital of France?\nA:"


def _greedy(client: openai.OpenAI, max_tokens: int = 40, **fields: Any) -> str:
    model = client.models.list().data[0].id
    answer = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0, **fields
    )
    return answer.choices[0].text


def _token_id(text: str) -> int:
    from ncompass_openai.server.engines.llama import LlamaEngine

    engine = LlamaEngine()
    engine.load()
    try:
        ids: list[int] = engine._model.tokenize(text.encode(), False, False)
    finally:
        engine.unload()
    assert len(ids) == 1, ids
    return ids[0]


@pytest.mark.model
def test_logit_bias_forces_and_bans_tokens(real: openai.OpenAI) -> None:
    banana = _token_id(" banana")
    assert _greedy(real, 5, logit_bias={str(banana): 100}) == " banana" * 5
    first = _greedy(real, 1)
    banned = _greedy(real, 1, logit_bias={str(_token_id(first)): -100})
    assert banned != first


@pytest.mark.model
def test_frequency_and_presence_penalties_change_a_repetitive_answer(real: openai.OpenAI) -> None:
    # Greedy, so each answer is fixed; without a penalty this prompt repeats its first sentence.
    plain = _greedy(real).split()
    penalised = _greedy(real, frequency_penalty=2.0).split()
    assert penalised != plain
    assert len(set(penalised)) / len(penalised) > len(set(plain)) / len(plain)
    assert _greedy(real, presence_penalty=2.0).split() != plain


@pytest.mark.model
def test_a_token_id_beyond_the_vocabulary_is_a_400(real: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _greedy(real, 1, logit_bias={"10000000": 5})
    assert caught.value.body["param"] == "logit_bias"  # type: ignore[index]
