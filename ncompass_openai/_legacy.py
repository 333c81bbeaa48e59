"""What the nCompass 0.0.x methods of both clients share: building requests and reading answers.

``start_session``, ``stop_session``, ``model_is_running``, ``wait_until_model_running``,
``complete_prompt``, ``complete_chat`` and ``print_prompt`` keep the 0.0.x signatures and results, on
top of the openai resources: requests get openai's auth, retries, timeouts and nCompass's
``Idempotency-Key``; streamed text takes the fast path of ``_streaming``; arguments are checked before
any network call (``_validation``). The methods themselves are the twins ``SyncLegacyMixin``
(``_legacy_sync.py``) and ``AsyncLegacyMixin`` (``_legacy_async.py``); what does no I/O is here, once.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import openai
from openai.resources.chat.completions import Completions as _ChatCompletions
from openai.resources.completions import Completions as _Completions

from ._validation import split_params, validate_messages, validate_prompt, validate_sampling

__all__ = [
    "CHAT_BATCH_CONCURRENCY",
    "FIRST_POLL",
    "UNREACHABLE",
    "Planned",
    "Sampling",
    "chat_texts",
    "completion_texts",
    "plan_chat",
    "plan_completion",
    "print_pieces",
]


CHAT_BATCH_CONCURRENCY = 4
"""How many conversations of a chat batch are in flight at once (chat has no batched request)."""

# Parameters openai's create() takes as keywords; anything else (vLLM's top_k, min_p, …) goes in
# extra_body. Read from the installed openai so 2.x and 3.x each get their own list.
COMPLETION_PARAMS = frozenset(inspect.signature(_Completions.create).parameters) - {"self"}
CHAT_PARAMS = frozenset(inspect.signature(_ChatCompletions.create).parameters) - {"self"}

# Errors after which the model's state is simply unknown (so "not running", 0.0.x's answer).
UNREACHABLE = (openai.APIConnectionError, openai.InternalServerError)

MIN_TOKENS = 1
"""The 0.0.x one-liners ask for at least this many tokens (vLLM's ``min_tokens``): they exist to print an
answer, and a small instruct model given a bare question often ends the text at once. A caller's own
``min_tokens`` (0 included) wins."""

# The 0.0.x wait polls sooner than the client's default: its timeout is 20 s, not 600 s.
FIRST_POLL = 0.25


def sampling(max_tokens: int | None, temperature: float | None, top_p: float | None) -> dict[str, Any]:
    # None means the server's default: leave the field out rather than send null.
    values = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    return {name: value for name, value in values.items() if value is not None}


def chat_extra(
    add_generation_prompt: bool, chat_template: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    template_type = params.pop("template_type", None)
    if template_type is not None:
        raise ValueError(
            "template_type is no longer supported: pass the Jinja chat template itself as "
            "chat_template='...', or leave it out to use the model's own template."
        )
    if add_generation_prompt and params.get("continue_final_message"):
        raise ValueError(
            "continue_final_message=True continues the last assistant message, so it cannot be combined "
            "with add_generation_prompt=True: pass add_generation_prompt=False."
        )
    if chat_template is not None and not isinstance(chat_template, str):
        raise ValueError("chat_template must be a Jinja template string (or None for the model's own).")
    extra: dict[str, Any] = {"add_generation_prompt": bool(add_generation_prompt)}
    if chat_template is not None:
        extra["chat_template"] = chat_template
    return extra


def request(
    model: str,
    params: dict[str, Any],
    known: frozenset[str],
    sampling: dict[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of openai's create(): known fields as keywords, the rest in extra_body."""
    merged = {**extra, **params}
    if merged.get("min_tokens") is None:
        merged["min_tokens"] = MIN_TOKENS
    kwargs = split_params(merged, known)
    kwargs.update(sampling)
    kwargs["model"] = model
    return kwargs


@dataclass(frozen=True)
class Planned:
    """A 0.0.x call checked and planned, with no I/O: what the twins send once they know the model.

    ``payload``: the prompt(s) or the conversation(s); ``model``: the caller's, if it named one.
    """

    batch: bool
    stream: bool
    payload: Any
    model: str | None
    known: frozenset[str]
    params: dict[str, Any]
    sampling: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def kwargs(self, model: str) -> dict[str, Any]:
        """openai's ``create()`` keyword arguments for ``model``."""
        return request(model, dict(self.params), self.known, self.sampling, self.extra)


class Sampling(NamedTuple):
    """The three sampling arguments every 0.0.x call takes positionally (``None``: the server's default)."""

    max_tokens: int | None
    temperature: float | None
    top_p: float | None

    def checked(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The fields sent, once checked (before any network call) with the call's ``min_tokens``."""
        validate_sampling(self.max_tokens, self.temperature, self.top_p, params.get("min_tokens"))
        return sampling(self.max_tokens, self.temperature, self.top_p)


def plan_completion(
    prompt: str | Sequence[str], values: Sampling, stream: bool, params: dict[str, Any]
) -> Planned:
    """``complete_prompt``'s checks (before any network call) and request."""
    batch = validate_prompt(prompt)
    fields = values.checked(params)
    if stream and batch:
        raise stream_batch_error("prompt")
    payload = list(prompt) if batch else cast(str, prompt)
    return Planned(batch, stream, payload, params.pop("model", None), COMPLETION_PARAMS, params, fields)


def plan_chat(
    messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
    add_generation_prompt: bool,
    chat_template: str | None,
    values: Sampling,
    stream: bool,
    params: dict[str, Any],
) -> Planned:
    """``complete_chat``'s checks (before any network call) and request."""
    batch = validate_messages(messages)
    fields = values.checked(params)
    extra = chat_extra(add_generation_prompt, chat_template, params)
    if stream and batch:
        raise stream_batch_error("conversation")
    return Planned(
        batch, stream, list(messages), params.pop("model", None), CHAT_PARAMS, params, fields, extra
    )


def completion_texts(plan: Planned, choices: Sequence[Any]) -> str | list[str]:
    """A completion's answer: its text, or the list of them for a list prompt (or ``n`` > 1)."""
    texts = choice_texts(choices, completion_text)
    return texts if plan.batch else one_or_many(texts)


def chat_texts(choices: Sequence[Any]) -> str | list[str]:
    """One conversation's answer: its text, or the list of them with ``n`` > 1."""
    return one_or_many(choice_texts(choices, chat_text))


def choice_texts(choices: Sequence[Any], attr: Callable[[Any], str | None]) -> list[str]:
    ordered = sorted(choices, key=lambda choice: choice.index)
    return [attr(choice) or "" for choice in ordered]


def completion_text(choice: Any) -> str | None:
    return cast("str | None", choice.text)


def chat_text(choice: Any) -> str | None:
    return cast("str | None", choice.message.content)


def one_or_many(texts: list[str]) -> str | list[str]:
    return texts[0] if len(texts) == 1 else texts


def stream_batch_error(what: str) -> ValueError:
    return ValueError(
        f"stream=True streams one {what}; for a batch (a list of {what}s) pass stream=False, which returns "
        "the list of answers in input order."
    )


def print_pieces(pieces: Iterable[str]) -> None:
    write = sys.stdout.write
    flush = sys.stdout.flush
    for piece in pieces:
        write(piece)
        flush()
    write("\n")
    flush()
