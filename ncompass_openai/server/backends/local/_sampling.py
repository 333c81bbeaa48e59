"""A request's sampling settings for the engine, refused where the engine cannot honour them."""

from __future__ import annotations

from ..._exceptions import InvalidRequest
from ...protocol._schemas import ChatCompletionRequest, CompletionRequest
from ...runtime._runtime import InferenceRuntime, SamplingParams

__all__ = ["sampling"]


def _biases(
    runtime: InferenceRuntime, req: CompletionRequest | ChatCompletionRequest
) -> tuple[tuple[int, float], ...]:
    biases = req.token_biases()
    if not biases:
        return biases
    vocab = runtime.vocab_size
    if vocab is None:
        raise InvalidRequest(
            "`logit_bias` needs token ids, and this server's engine has none (the synthetic engine's words "
            "are not tokens): remove it, or serve a model (the llama engine).",
            param="logit_bias",
        )
    unknown = [token for token, _ in biases if token >= vocab]
    if unknown:
        raise InvalidRequest(
            f"`logit_bias` names token id {unknown[0]}, but this model's ids run from 0 to {vocab - 1}.",
            param="logit_bias",
        )
    return biases


def _logprobs(runtime: InferenceRuntime, req: CompletionRequest | ChatCompletionRequest) -> int | None:
    count = req.logprob_count()
    if count is not None and not runtime.supports_logprobs:
        raise InvalidRequest(
            f"`logprobs` needs a model's probabilities, which the {runtime.engine_name} engine does "
            "not have: remove it, or serve a model (the llama engine).",
            param="logprobs",
        )
    return count


def sampling(
    runtime: InferenceRuntime,
    req: CompletionRequest | ChatCompletionRequest,
    max_tokens: int,
    grammar: str | None = None,
) -> SamplingParams:
    """The engine's :class:`SamplingParams` of ``req``, generating at most ``max_tokens``."""
    top_k = req.top_k if req.top_k not in (None, 0) else -1
    if req.min_tokens > max_tokens:
        raise InvalidRequest(
            f"`min_tokens` ({req.min_tokens}) is more than this request's token limit ({max_tokens}); "
            "lower it or raise `max_tokens`.",
            param="min_tokens",
        )
    return SamplingParams(
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        logit_bias=_biases(runtime, req),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=-1 if top_k is None else top_k,
        min_p=0.0 if req.min_p is None else req.min_p,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        seed=req.seed,
        grammar=grammar,
        logprobs=_logprobs(runtime, req),
    )
