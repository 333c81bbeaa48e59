"""A sequence's llama.cpp sampler chain: logit bias, penalties, top-k, top-p, min-p, temperature, seed."""

from __future__ import annotations

import os
from typing import Any

from ._base import SamplingParams
from ._llama_cpp import llama_cpp_module

__all__ = ["sampler_chain"]

_PENALTY_LAST_N = 64  # tokens the repetition penalty looks back over


def sampler_chain(params: SamplingParams, prompt: list[int], n_vocab: int) -> Any:
    """The sequence's llama.cpp sampler chain; None for plain greedy decoding (an argmax needs none)."""
    penalized = params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty
    if params.temperature <= 0 and not params.logit_bias and not penalized:
        return None
    llama_cpp = llama_cpp_module()
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    if params.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))(
            *(llama_cpp.llama_logit_bias(token, bias) for token, bias in params.logit_bias)
        )
        add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
    if params.repetition_penalty != 1.0:
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, _PENALTY_LAST_N, params.repetition_penalty, 0.0, 0.0
            ),
        )
        # vLLM penalizes tokens of the prompt too.
        for token in prompt[-_PENALTY_LAST_N:]:
            llama_cpp.llama_sampler_accept(chain, token)
    if params.presence_penalty or params.frequency_penalty:
        # Added after the prompt was accepted: as OpenAI's and vLLM's, they count generated tokens only.
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                params.max_tokens,
                1.0,
                params.frequency_penalty,
                params.presence_penalty,
            ),
        )
    if params.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0.0:
        add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
    add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
