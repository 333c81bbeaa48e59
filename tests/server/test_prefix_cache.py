"""Prompt (prefix) reuse: the slot a sequence takes and what it keeps, then the real model over HTTP.

The llama engine keeps each finished sequence's KV cache; a new sequence of the same tenant decodes only
what follows the longest cached prefix of its prompt, and says so in ``usage.prompt_tokens_details``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from ncompass_openai.server import LocalServer
from ncompass_openai.server.engines._prefix import Placement, SlotCache

# ---------------------------------------------------------------------------------------------------
# SlotCache: which slot, how much is kept


def test_a_new_group_takes_an_empty_slot_and_keeps_nothing() -> None:
    cache = SlotCache(4, budget=1000)
    assert cache.place([1, 2, 3], "a", free=[0, 1, 2, 3]) == Placement(0, 0)
    assert cache.tokens[0] == [] and cache.group[0] == "a"


def test_a_free_slot_holding_a_prefix_is_cut_back_to_it() -> None:
    cache = SlotCache(4, budget=1000)
    cache.place([1, 2, 3], "a", free=[0, 1, 2, 3])
    cache.tokens[0] = [1, 2, 3, 9, 9]  # the prompt, then what it generated
    placement = cache.place([1, 2, 3, 4], "a", free=[0, 1, 2, 3])
    assert placement == Placement(0, 3)
    assert cache.tokens[0] == [1, 2, 3]


def test_the_last_prompt_token_is_always_decoded_again() -> None:
    cache = SlotCache(2, budget=1000)
    cache.place([1, 2, 3], "a", free=[0, 1])
    cache.tokens[0] = [1, 2, 3, 4]
    assert cache.place([1, 2, 3], "a", free=[0, 1]) == Placement(0, 2)
    cache.tokens[0] = [7]
    assert cache.place([7], "a", free=[0, 1]).keep == 0  # one token: nothing to keep


def test_without_reuse_nothing_is_kept_but_the_prompt_is_cached_for_the_group() -> None:
    cache = SlotCache(2, budget=1000)
    cache.place([1, 2, 3], "a", free=[0, 1])
    cache.tokens[0] = [1, 2, 3, 4]
    assert cache.place([1, 2, 3, 5], "a", free=[0, 1], reuse=False) == Placement(1, 0)  # slot 0 stays
    cache.tokens[1] = [1, 2, 3, 5]
    assert cache.group[1] == "a"
    assert cache.place([1, 2, 3, 5, 6], "a", free=[0, 1]) == Placement(1, 4)


def test_another_group_never_reuses_a_cache() -> None:
    cache = SlotCache(2, budget=1000)
    cache.place([1, 2, 3], "a", free=[0, 1])
    cache.tokens[0] = [1, 2, 3, 4]
    placement = cache.place([1, 2, 3, 4, 5], "b", free=[0, 1])
    assert placement == Placement(1, 0)  # the empty slot, not a's
    assert cache.place([1, 2, 3], None, free=[0]) == Placement(0, 0)  # no group: never shared
    assert cache.tokens[0] == [] and cache.group[0] is None


def test_a_longer_prefix_in_a_busy_slot_is_copied_into_a_free_one() -> None:
    cache = SlotCache(3, budget=1000)
    cache.place([1, 2, 3], "a", free=[0, 1, 2])
    cache.tokens[0] = [1, 2, 3, 4, 5]  # slot 0 is generating
    cache.place([1, 8], "a", free=[1, 2])
    cache.tokens[1] = [1, 8, 8]
    placement = cache.place([1, 2, 3, 4, 6], "a", free=[1, 2])
    assert placement == Placement(2, 4, copy_from=0)  # the empty slot, with slot 0's 4 tokens
    assert cache.tokens[2] == [1, 2, 3, 4] and cache.tokens[0] == [1, 2, 3, 4, 5]


def test_with_no_prefix_the_least_recently_used_cache_goes() -> None:
    cache = SlotCache(2, budget=1000)
    for slot, prompt in enumerate(([1, 1], [2, 2])):
        cache.place(prompt, "a", free=[slot])
        cache.tokens[slot] = [*prompt, 0]
    assert cache.place([3, 3], "a", free=[0, 1]).slot == 0  # slot 0 was taken first
    assert cache.place([4, 4], "a", free=[1]).slot == 1


def test_idle_slots_keep_at_most_the_budget_oldest_dropped_first() -> None:
    cache = SlotCache(3, budget=5)
    for slot in range(3):
        cache.place([slot, slot], "a", free=[slot])
        cache.tokens[slot] = [slot] * 3
    assert cache.over_budget([0, 1, 2]) == [0, 1]  # 9 tokens: drop the two oldest to get to 3
    assert cache.over_budget([2]) == []


# ---------------------------------------------------------------------------------------------------
# The real model: usage tells what was reused, and reuse never changes an answer

SYSTEM = "You are a careful assistant who answers every question about the weather in one sentence."


@pytest.fixture(scope="module")
def model_server() -> Iterator[LocalServer]:
    """A private real-model server with two tenants and a fresh cache."""
    with LocalServer(engine="llama", api_keys=[KEY_A, KEY_B], db=":memory:") as srv:
        yield srv


KEY_A = "nc-test-prefix-tenant-a-0123456789"
KEY_B = "nc-test-prefix-tenant-b-9876543210"


@pytest.fixture(scope="module")
def tenant(model_server: LocalServer) -> Callable[[str], openai.OpenAI]:
    def make(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=model_server.base_url, api_key=key, max_retries=0, timeout=120)

    return make


def _chat(client: openai.OpenAI, question: str, max_tokens: int = 12) -> Any:
    return client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
    )


def _cached(answer: Any) -> int:
    details = answer.usage.prompt_tokens_details
    assert details is not None
    return int(details.cached_tokens)


@pytest.mark.model
def test_the_same_prompt_again_decodes_only_its_last_token(tenant: Callable[[str], openai.OpenAI]) -> None:
    client = tenant(KEY_A)
    first = _chat(client, "Will it rain in Lisbon tomorrow?")
    again = _chat(client, "Will it rain in Lisbon tomorrow?")
    assert _cached(again) == again.usage.prompt_tokens - 1
    assert again.choices[0].message.content == first.choices[0].message.content


@pytest.mark.model
def test_a_seeded_request_decodes_its_whole_prompt_and_gives_the_same_text(
    tenant: Callable[[str], openai.OpenAI],
) -> None:
    """llama.cpp's attention rounds differently with where a sequence's cells lie in the cache, and at a
    temperature the sampled answer follows: a seed turns the cache off (and empties it when idle)."""
    client = tenant(KEY_A)
    texts, cached = [], []
    for _ in range(3):
        answer = client.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a wind."}],
            max_tokens=24,
            temperature=1.0,
            seed=3,
        )
        texts.append(answer.choices[0].message.content)
        cached.append(_cached(answer))
    assert cached == [0, 0, 0] and len(set(texts)) == 1


@pytest.mark.model
def test_another_tenant_never_reuses_the_cache(tenant: Callable[[str], openai.OpenAI]) -> None:
    a, b = tenant(KEY_A), tenant(KEY_B)
    mine = _chat(a, "Is it windy in Oslo?")
    theirs = _chat(b, "Is it windy in Oslo?")
    assert _cached(theirs) == 0
    assert theirs.choices[0].message.content == mine.choices[0].message.content
    assert _cached(_chat(b, "Is it windy in Oslo?")) == theirs.usage.prompt_tokens - 1  # b's own, now


@pytest.mark.model
def test_a_shared_system_prompt_is_copied_from_a_request_still_generating(
    tenant: Callable[[str], openai.OpenAI],
) -> None:
    """While tenant b's long answer generates, b's second request starts from b's cached system prompt:
    its answer is the one tenant a gets with nothing cached for it."""
    b = tenant(KEY_B)
    started = threading.Event()

    def long_answer() -> None:
        stream = b.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Describe a storm."},
            ],
            max_tokens=96,
            temperature=0,
            stream=True,
        )
        for _ in stream:
            started.set()

    runner = threading.Thread(target=long_answer)
    runner.start()
    assert started.wait(60)
    shared = _chat(b, "Is it sunny in Cairo in June?")
    runner.join(120)
    fresh = _chat(tenant(KEY_A), "Is it sunny in Cairo in June?")
    assert _cached(shared) > 10  # at least the system prompt's turn
    assert _cached(shared) < shared.usage.prompt_tokens - 1  # the question itself was new
    assert shared.choices[0].message.content == fresh.choices[0].message.content


@pytest.mark.model
def test_streamed_usage_and_the_responses_api_count_cached_tokens(
    tenant: Callable[[str], openai.OpenAI],
) -> None:
    client = tenant(KEY_A)
    question = "What is the weather like on Mars?"
    _chat(client, question)
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usage) == 1 and usage[0].prompt_tokens_details is not None
    assert usage[0].prompt_tokens_details.cached_tokens == usage[0].prompt_tokens - 1
    first = client.responses.create(
        model="SmolLM2-135M-Instruct", input="Name a cold planet.", max_output_tokens=8
    )
    again = client.responses.create(
        model="SmolLM2-135M-Instruct", input="Name a cold planet.", max_output_tokens=8
    )
    assert first.usage is not None and again.usage is not None
    assert again.usage.input_tokens_details.cached_tokens == again.usage.input_tokens - 1
