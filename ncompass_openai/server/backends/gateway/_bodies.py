"""The gateway's bodies: what a request is forwarded with, or the 400 that refuses to forward it.

Upstreams differ in what they honour (a server may ignore a field it does not know; llama-cpp-python's
refuses a ``json_schema`` response format with a 500), so nothing is forwarded on trust: a request that
uses a feature the operator has not declared with ``--upstream-supports`` answers 400 naming the
feature and the flag, before anything is sent. A declared ``response_format`` is forwarded, and each
answer still checked against it (``_answer_check.py``). The fields every OpenAI-compatible server
implements (messages or prompt, ``max_tokens``, ``temperature``, ``top_p``, ``n``, ``stop``, ``seed``,
the penalties, ``logit_bias``, ``user``) are forwarded as the tenant sent them, after the same
validation as for every engine.

A request is forwarded as it was sent: streamed or not. A stream is asked for with
``stream_options.include_usage``, so that the session counts the upstream's own usage (an upstream that
ignores it, as llama-cpp-python's server does, leaves a stream's prompt tokens at 0 and its completion
tokens counted by chunk); ``--upstream-timeout`` bounds each of its reads. An answer that is not streamed
comes whole, with its usage, within ``--upstream-answer-timeout``: the upstream then spends nothing on
chunks (on two cores shared with its model, 8 streamed answers took 1.07x the time of the same 8 whole).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._exceptions import InvalidRequest
from ..._settings import UPSTREAM_FEATURES
from ...protocol._schemas import ChatCompletionRequest, CompletionRequest

if TYPE_CHECKING:
    from ._answer_check import AnswerCheck, CallsCheck

__all__ = ["answer_checks", "body_of", "bounds_of", "refuse_undeclared", "refuse_unforwarded"]

# The fields of a feature, and when a request uses it (a default value, such as `logprobs: false`, does not).
_USED: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: bool(v),
    "tool_choice": lambda v: v is not None and v != "none",
    "parallel_tool_calls": lambda v: v is not None,
    "response_format": lambda v: v is not None and v.type != "text",
    "logprobs": lambda v: v is not None and v is not False,
    "top_logprobs": lambda v: v is not None,
    "top_k": lambda v: v is not None and v not in (-1, 0),
    "min_p": lambda v: v is not None and v > 0,
    "repetition_penalty": lambda v: v is not None and v != 1.0,
    "min_tokens": lambda v: bool(v) and v > 1,  # 1 is checked here, for any upstream (see body_of)
    "add_generation_prompt": lambda v: v is not True,
    "continue_final_message": lambda v: bool(v),
    "chat_template": lambda v: v is not None,
    "chat_template_kwargs": lambda v: bool(v),
}
_FEATURE_OF = {
    "min_tokens": "min_tokens",
    "tools": "tools",
    "tool_choice": "tools",
    "parallel_tool_calls": "tools",
    "response_format": "response_format",
    "logprobs": "logprobs",
    "top_logprobs": "logprobs",
    **{
        name: "vllm"
        for name in (
            "top_k",
            "min_p",
            "repetition_penalty",
            "add_generation_prompt",
            "continue_final_message",
            "chat_template",
            "chat_template_kwargs",
        )
    },
}


def refuse_unforwarded(feature: str, param: str | None = None) -> InvalidRequest:
    """The 400 of a request that needs ``feature``, which no declaration lets through."""
    what = f"`{param}` needs {feature}, which" if param else f"{feature} is a feature"
    if feature in UPSTREAM_FEATURES:
        message = (
            f"{what} the upstreams of this server (ncompass serve --engine openai) are not declared to "
            f"enforce: remove it, or declare it with `--upstream-supports {feature}` if they do."
        )
    else:
        message = (
            f"{what} this server's openai engine does not forward yet (`--upstream-supports` declares "
            f"only: {', '.join(sorted(UPSTREAM_FEATURES))}): remove it."
        )
    return InvalidRequest(message, param=param, code="unsupported_by_upstream")


def refuse_undeclared(req: ChatCompletionRequest | CompletionRequest, supports: frozenset[str]) -> None:
    """Raise the 400 of the first field ``req`` uses whose feature is not in ``supports``."""
    sent = req.model_fields_set
    for name, feature in _FEATURE_OF.items():
        if name in sent and feature not in supports and _USED[name](getattr(req, name, None)):
            raise refuse_unforwarded(feature, name)


def body_of(
    req: ChatCompletionRequest | CompletionRequest, supports: frozenset[str], model: str
) -> dict[str, Any]:
    """The body ``req`` is forwarded with; the 400 of a feature not in ``supports``.

    ``max_completion_tokens`` is sent as ``max_tokens``, which every OpenAI-compatible server honours
    (llama-cpp-python's ignores the other). ``min_tokens: 1`` (which the 0.0.x methods send) goes only to
    an upstream declared ``min_tokens`` (or ``vllm``); for any other, the gateway checks it on the answer
    (:class:`Reading`).
    """
    refuse_undeclared(req, supports)
    body = req.model_dump(mode="json", exclude_unset=True, by_alias=True)
    body.pop("echo", None)  # the completions route puts the prompt in front itself, as for every engine
    if "max_completion_tokens" in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    if "min_tokens" not in supports:
        body.pop("min_tokens", None)
    if isinstance(req, CompletionRequest) and "max_tokens" not in body:
        body["max_tokens"] = req.max_tokens  # the protocol's default (16), whatever the upstream's
    body.update(model=model, stream=req.stream)
    if req.stream:  # `stream_options` without `stream` was refused (the request's `check()`)
        body["stream_options"] = {"include_usage": True}
    return body


def bounds_of(
    req: ChatCompletionRequest | CompletionRequest, supports: frozenset[str]
) -> tuple[int | None, int]:
    """``(limit, min_tokens)`` the gateway enforces on each choice: the request's token limit, and the
    ``min_tokens`` an upstream not declared to honour it is not sent (0 or 1)."""
    limit = req.token_limit() if isinstance(req, ChatCompletionRequest) else req.max_tokens
    return limit, 0 if "min_tokens" in supports else min(req.min_tokens, 1)


def answer_checks(req: ChatCompletionRequest) -> tuple[AnswerCheck | None, CallsCheck | None]:
    """The checks of each answer: against the request's ``response_format``, and its calls against its
    ``tools``; ``None`` for what the request does not have."""
    fmt = req.response_format
    formatted = fmt is not None and fmt.type != "text"
    if not formatted and not req.tools:
        return None, None
    from ._answer_check import answer_check, calls_check  # jsonschema: only when there is a check

    check = answer_check(fmt) if fmt is not None and formatted else None
    tools = calls_check(req.function_specs(), req.tool_choice_name()) if req.tools else None
    return check, tools
