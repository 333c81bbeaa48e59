from __future__ import annotations

import asyncio
import gc
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from ncompass_openai.server._exceptions import (
    ChatTemplateError,
    ContextLengthError,
    ModelUnavailableError,
    QueueFullError,
)
from ncompass_openai.server.engines import make_engine
from ncompass_openai.server.engines.synthetic import SyntheticEngine
from ncompass_openai.server.runtime._runtime import GenerationEvent, InferenceRuntime, SamplingParams
from ncompass_openai.server.runtime._stop import StopMatcher

pytestmark = pytest.mark.anyio


async def _runtime(**engine_kwargs: float) -> InferenceRuntime:
    runtime = InferenceRuntime(SyntheticEngine(**engine_kwargs), max_queue_per_key=3)  # type: ignore[arg-type]
    await runtime.load()
    return runtime


@pytest.fixture
async def runtime() -> AsyncIterator[InferenceRuntime]:
    rt = await _runtime()
    yield rt
    await rt.aclose()


@pytest.fixture
async def slow_runtime() -> AsyncIterator[InferenceRuntime]:
    """One sequence at a time, 2 ms per token: queueing and cancellation become observable."""
    rt = await _runtime(max_batch=1, delay=0.002)
    yield rt
    await rt.aclose()


async def _collect(stream: AsyncIterator[GenerationEvent]) -> list[GenerationEvent]:
    return [event async for event in stream]


def _texts(events: list[GenerationEvent]) -> dict[int, str]:
    out: dict[int, str] = defaultdict(str)
    for event in events:
        out[event.index] += event.text
    return dict(out)


async def test_events_count_tokens_and_end_with_length(runtime: InferenceRuntime) -> None:
    stream = runtime.generate("t", ["hello there"], SamplingParams(max_tokens=7))
    events = await _collect(stream)
    assert len(events) == 7
    assert [e.completion_tokens for e in events] == list(range(1, 8))
    assert [e.finish_reason for e in events] == [None] * 6 + ["length"]
    assert stream.prompt_tokens == runtime.count_tokens("hello there") == 2


async def test_batch_and_n_give_every_index_once(runtime: InferenceRuntime) -> None:
    stream = runtime.generate("t", ["a b", "c d e"], SamplingParams(max_tokens=4, seed=3), n=3)
    events = await _collect(stream)
    by_index: dict[int, list[GenerationEvent]] = defaultdict(list)
    for event in events:
        by_index[event.index].append(event)
    assert sorted(by_index) == list(range(6))
    for evs in by_index.values():
        assert [e.finish_reason for e in evs][-1] == "length"
        assert sum(e.finish_reason is not None for e in evs) == 1
        assert evs[-1].completion_tokens == len(evs) == 4
    assert stream.prompt_token_counts == [2, 3]
    assert stream.prompt_tokens == 5  # each prompt once, whatever n


async def test_seed_makes_output_repeatable_and_batch_independent(runtime: InferenceRuntime) -> None:
    params = SamplingParams(max_tokens=12, seed=42)
    first = _texts(await _collect(runtime.generate("t", ["p"], params)))
    second = _texts(await _collect(runtime.generate("t", ["p"], params)))
    other = _texts(await _collect(runtime.generate("t", ["p"], SamplingParams(max_tokens=12, seed=7))))
    assert first == second
    assert first != other
    # Choice j of a prompt uses seed + j, so a prompt answers the same alone or inside a batch with n.
    batch = _texts(await _collect(runtime.generate("t", ["q", "p"], params, n=2)))
    assert batch[2] == first[0]
    assert (
        batch[3]
        == _texts(await _collect(runtime.generate("t", ["p"], SamplingParams(max_tokens=12, seed=43))))[0]
    )


async def test_stop_string_split_across_tokens_never_leaks(runtime: InferenceRuntime) -> None:
    params = SamplingParams(max_tokens=40, temperature=0)
    events = await _collect(runtime.generate("t", ["stop test"], params))
    full = "".join(e.text for e in events)
    # A stop string made of the end of token 5 and the start of token 6 spans two tokens.
    boundary = len("".join(e.text for e in events[:5]))
    stop = full[boundary - 2 : boundary + 2]
    assert len(stop) == 4
    expected = full[: full.find(stop)]

    stopped = await _collect(runtime.generate("t", ["stop test"], params, stop=["never there", stop]))
    text = "".join(e.text for e in stopped)
    assert text == expected
    assert stop not in text
    assert stopped[-1].finish_reason == "stop"
    assert stopped[-1].completion_tokens == len(stopped) < len(events)


def test_stop_matcher_holds_back_partial_matches() -> None:
    matcher = StopMatcher(["END", "xyz"])
    assert matcher.feed("abc E") == ("abc ", False)
    assert matcher.feed("N") == ("", False)
    assert matcher.feed("Dtail") == ("", True)
    matcher = StopMatcher(["END"])
    assert matcher.feed("hi EN") == ("hi ", False)
    assert matcher.feed("!") == ("EN!", False)
    assert matcher.feed("E") == ("", False)
    assert matcher.flush() == "E"


async def test_queue_is_fifo_within_a_tenant(slow_runtime: InferenceRuntime) -> None:
    finished: list[int] = []

    async def run(i: int) -> None:
        await _collect(slow_runtime.generate("t", [f"p{i}"], SamplingParams(max_tokens=5)))
        finished.append(i)

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(run(i)))
        await asyncio.sleep(0)  # each request is queued before the next
    await asyncio.gather(*tasks)
    assert finished == [0, 1, 2]


async def test_tenants_are_served_round_robin(slow_runtime: InferenceRuntime) -> None:
    finished: list[str] = []

    async def run(tenant: str, i: int) -> None:
        await _collect(slow_runtime.generate(tenant, [f"p{i}"], SamplingParams(max_tokens=5)))
        finished.append(f"{tenant}{i}")

    tasks = [asyncio.create_task(run("a", i)) for i in range(3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(run("b", 0)))
    await asyncio.gather(*tasks)
    # b came last but does not wait behind all of a's requests.
    assert finished.index("b0") < finished.index("a2")


async def test_per_tenant_bound_raises_queue_full(slow_runtime: InferenceRuntime) -> None:
    params = SamplingParams(max_tokens=100_000)
    streams = [slow_runtime.generate("t", ["x"], params) for _ in range(3)]
    with pytest.raises(QueueFullError) as info:
        slow_runtime.generate("t", ["x"], params)
    assert info.value.retry_after >= 1
    assert "3" in str(info.value)
    # Another tenant is not affected.
    other = slow_runtime.generate("u", ["x"], SamplingParams(max_tokens=2))
    await other.aclose()
    # Closing one of them frees a place at once.
    await streams[2].aclose()
    assert slow_runtime.inflight("t") == 2
    streams.append(slow_runtime.generate("t", ["x"], params))
    for stream in streams:
        await stream.aclose()
    assert slow_runtime.inflight("t") == 0


async def test_closing_a_stream_frees_the_worker_promptly(slow_runtime: InferenceRuntime) -> None:
    endless = slow_runtime.generate("t", ["x"], SamplingParams(max_tokens=1_000_000))
    await endless.__anext__()
    await endless.__anext__()
    waiting = slow_runtime.generate("u", ["y"], SamplingParams(max_tokens=3))
    await endless.aclose()
    start = time.monotonic()
    events = await asyncio.wait_for(_collect(waiting), 5)
    assert time.monotonic() - start < 1.0
    assert events[-1].finish_reason == "length"
    assert slow_runtime.inflight("t") == 0
    with pytest.raises(StopAsyncIteration):
        await endless.__anext__()


async def test_cancelled_consumer_task_cancels_generation(slow_runtime: InferenceRuntime) -> None:
    async def consume() -> None:
        await _collect(slow_runtime.generate("t", ["x"], SamplingParams(max_tokens=1_000_000)))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow_runtime.inflight("t") == 0
    events = await asyncio.wait_for(
        _collect(slow_runtime.generate("t", ["y"], SamplingParams(max_tokens=2))), 5
    )
    assert len(events) == 2


async def test_dropped_stream_frees_its_place(slow_runtime: InferenceRuntime) -> None:
    slow_runtime.generate("t", ["x"], SamplingParams(max_tokens=1_000_000))
    gc.collect()
    assert slow_runtime.inflight("t") == 0


async def test_event_loop_stays_responsive_during_generation(slow_runtime: InferenceRuntime) -> None:
    stream = slow_runtime.generate("t", ["x"], SamplingParams(max_tokens=200))
    consumer = asyncio.create_task(_collect(stream))
    worst = 0.0
    while not consumer.done():
        start = time.monotonic()
        await asyncio.sleep(0.005)
        worst = max(worst, time.monotonic() - start)
    assert len(consumer.result()) == 200
    assert worst < 0.5  # the loop never waits for a token (generous: the CI machine is shared)


async def test_context_length_and_unloaded_model_are_refused(runtime: InferenceRuntime) -> None:
    with pytest.raises(ContextLengthError, match="max_tokens"):
        runtime.generate("t", ["x"], SamplingParams(max_tokens=runtime.context_length))
    await runtime.unload()
    with pytest.raises(ModelUnavailableError):
        runtime.generate("t", ["x"], SamplingParams(max_tokens=2))
    assert runtime.inflight("t") == 0


async def test_unload_fails_waiting_requests(slow_runtime: InferenceRuntime) -> None:
    running = slow_runtime.generate("t", ["x"], SamplingParams(max_tokens=1_000_000))
    queued = slow_runtime.generate("t", ["y"], SamplingParams(max_tokens=5))
    await running.__anext__()
    await slow_runtime.unload()
    with pytest.raises(ModelUnavailableError):
        await _collect(running)
    with pytest.raises(ModelUnavailableError):
        await _collect(queued)
    assert slow_runtime.inflight("t") == 0
    await slow_runtime.load()
    assert len(await _collect(slow_runtime.generate("t", ["z"], SamplingParams(max_tokens=2)))) == 2


async def test_concurrent_requests_share_the_batch(runtime: InferenceRuntime) -> None:
    streams = [runtime.generate(f"t{i}", ["x"], SamplingParams(max_tokens=50)) for i in range(4)]
    firsts = [await s.__anext__() for s in streams]
    assert all(e.completion_tokens == 1 for e in firsts)
    rests = await asyncio.gather(*(_collect(s) for s in streams))
    assert all(len(r) == 49 for r in rests)


async def test_batch_larger_than_the_engine_fills_slots_as_they_free() -> None:
    runtime = await _runtime(max_batch=2)
    try:
        prompts = [f"p{i}" for i in range(5)]
        events = await _collect(runtime.generate("t", prompts, SamplingParams(max_tokens=3, seed=0), n=2))
        finished = sorted(e.index for e in events if e.finish_reason is not None)
        assert finished == list(range(10))
        assert runtime.inflight("t") == 0
    finally:
        await runtime.aclose()


async def test_stop_strings_apply_to_every_choice(runtime: InferenceRuntime) -> None:
    params = SamplingParams(max_tokens=30, seed=5)
    plain = _texts(await _collect(runtime.generate("t", ["a", "b"], params, n=2)))
    stopped_events = await _collect(runtime.generate("t", ["a", "b"], params, n=2, stop=[","]))
    stopped = _texts(stopped_events)
    for index, text in plain.items():
        assert stopped[index] == text.split(",")[0]
    reasons = {e.index: e.finish_reason for e in stopped_events if e.finish_reason}
    assert all(reasons[i] == ("stop" if "," in plain[i] else "length") for i in plain)


def test_render_chat_uses_the_model_template() -> None:
    runtime = InferenceRuntime(make_engine("synthetic"))
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    prompt = runtime.render_chat(messages)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "be brief" in prompt
    assert not runtime.render_chat(messages, add_generation_prompt=False).endswith("assistant\n")


def test_render_chat_continue_final_message_leaves_the_turn_open() -> None:
    runtime = InferenceRuntime(make_engine("synthetic"))
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Once upon"}]
    prompt = runtime.render_chat(messages, add_generation_prompt=False, continue_final_message=True)
    assert prompt.endswith("<|im_start|>assistant\nOnce upon")
    with pytest.raises(ChatTemplateError, match="add_generation_prompt"):
        runtime.render_chat(messages, add_generation_prompt=True, continue_final_message=True)


def test_render_chat_custom_template_kwargs_and_helpers() -> None:
    runtime = InferenceRuntime(make_engine("synthetic"))
    template = (
        "{{ greeting }}|{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}"
        "{{ strftime_now('%Y') | length }}|{{ messages | tojson }}"
    )
    prompt = runtime.render_chat(
        [{"role": "user", "content": [{"type": "text", "text": "caf"}, {"type": "text", "text": "é"}]}],
        chat_template=template,
        chat_template_kwargs={"greeting": "hey"},
    )
    assert prompt.startswith("hey|user=café;4|")
    assert '"café"' in prompt


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{% for m in messages %}", "syntax error"),
        ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
        ("{{ messages.__class__.__subclasses__() }}", "chat_template"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ messages.append(1) }}", "sandbox"),
    ],
)
def test_render_chat_template_errors_are_readable(template: str, match: str) -> None:
    runtime = InferenceRuntime(make_engine("synthetic"))
    with pytest.raises(ChatTemplateError, match=match):
        runtime.render_chat([{"role": "user", "content": "hi"}], chat_template=template)


def test_make_engine_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="synthetic"):
        make_engine("gpt")


def test_queue_full_error_is_polite() -> None:
    error = QueueFullError(3, limit=8)
    assert error.retry_after == 3
    assert "retry in 3 s" in str(error)


async def test_synthetic_token_rate_and_batch_width_pace_the_engine() -> None:
    # ``ncompass serve --engine synthetic --synthetic-token-rate 100 --max-batch 2``: 20 tokens take at
    # least 0.19 s; two requests stream side by side, a third waits for a slot.
    engine = make_engine("synthetic", max_batch=2, token_rate=100.0)
    assert (engine.max_batch, engine.delay) == (2, 0.01)  # type: ignore[attr-defined]
    runtime = InferenceRuntime(engine, max_queue_per_key=8)
    await runtime.load()
    try:
        params = SamplingParams(max_tokens=20)

        async def one() -> float:
            started = time.perf_counter()
            events = await _collect(runtime.generate("t", ["go"], params))
            assert events[-1].completion_tokens == 20
            return time.perf_counter() - started

        alone = await one()
        started = time.perf_counter()
        pair = await asyncio.gather(one(), one())
        pair_wall = time.perf_counter() - started
        started = time.perf_counter()
        await asyncio.gather(one(), one(), one())
        three_wall = time.perf_counter() - started
    finally:
        await runtime.aclose()
    assert alone >= 0.19
    assert min(pair) >= 0.19
    assert pair_wall < 2 * 0.19  # side by side: not one after the other
    assert three_wall >= 2 * 0.19  # the third waited for a free slot
