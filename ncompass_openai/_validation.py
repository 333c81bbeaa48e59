"""Client-side checks of the 0.0.x methods' arguments, run before any network call.

A bad argument raises ``ValueError`` naming the argument, what was wrong and the allowed values, so a
mistake costs no request (and, on a time-billed session, no waiting for a 400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CHAT_ROLES",
    "is_chat_batch",
    "split_params",
    "validate_messages",
    "validate_prompt",
    "validate_sampling",
]


def _a(value: object) -> str:
    """``a str``, ``an int``: the type of ``value`` with its article."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""Roles the OpenAI chat API (and the nCompass server) accept."""


def validate_prompt(prompt: object) -> bool:
    """Checks a completion prompt: a non-empty string or a non-empty list of non-empty strings.

    Returns:
        True when ``prompt`` is a batch (a list of prompts).
    """
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("prompt is empty: pass a non-empty string (or a list of non-empty strings).")
        return False
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            raise ValueError("prompt is an empty list: pass at least one prompt string.")
        for i, item in enumerate(prompt):
            if not isinstance(item, str):
                raise ValueError(
                    f"prompt[{i}] is {_a(item)}, not a string: a prompt list must hold only "
                    "non-empty strings."
                )
            if not item:
                raise ValueError(
                    f"prompt[{i}] is empty: every prompt in the list must be a non-empty string."
                )
        return True
    raise ValueError(
        f"prompt is {_a(prompt)}: pass a non-empty string, or a list of non-empty strings for a batch."
    )


def is_chat_batch(messages: object) -> bool:
    """True when ``messages`` is a list of conversations (a list whose first item is itself a list)."""
    return isinstance(messages, (list, tuple)) and bool(messages) and isinstance(messages[0], (list, tuple))


def validate_messages(messages: object) -> bool:
    """Checks chat messages: a list of ``{"role", "content"}`` dicts, or a list of such lists (a batch).

    Returns:
        True when ``messages`` is a batch (a list of conversations).
    """
    if is_chat_batch(messages):
        assert isinstance(messages, (list, tuple))
        for i, conversation in enumerate(messages):
            _validate_conversation(conversation, f"messages[{i}]")
        return True
    _validate_conversation(messages, "messages")
    return False


def _validate_conversation(conversation: object, name: str) -> None:
    if not isinstance(conversation, (list, tuple)):
        raise ValueError(
            f"{name} is {_a(conversation)}: pass a list of messages, each a dict "
            '{"role": ..., "content": ...} (or a list of such lists for a batch).'
        )
    if not conversation:
        raise ValueError(f'{name} is empty: pass at least one message {{"role": ..., "content": ...}}.')
    for j, message in enumerate(conversation):
        where = f"{name}[{j}]"
        if not isinstance(message, Mapping):
            raise ValueError(f'{where} is {_a(message)}, not a dict {{"role": ..., "content": ...}}.')
        role = message.get("role")
        if role not in CHAT_ROLES:
            if role is None:
                raise ValueError(f'{where} has no "role": give one of {", ".join(sorted(CHAT_ROLES))}.')
            raise ValueError(
                f"{where} has the unknown role {role!r}: the role must be one of "
                f"{', '.join(sorted(CHAT_ROLES))}."
            )
        if "content" not in message:
            raise ValueError(f'{where} has no "content": give the message text as a string.')
        content = message["content"]
        # None is OpenAI's content of an assistant message that only calls tools.
        if content is None and (message.get("tool_calls") or message.get("function_call")):
            continue
        if not isinstance(content, (str, list)):
            raise ValueError(
                f'{where}["content"] is {_a(content)}: the content must be a string '
                "(or a list of content parts)."
            )


def validate_sampling(
    max_tokens: object, temperature: object, top_p: object, min_tokens: object = None
) -> None:
    """Checks ``max_tokens`` (an int ≥ 1), ``temperature`` (in [0, 2]), ``top_p`` (in (0, 1]) and
    ``min_tokens`` (vLLM's: an int ≥ 0, at most ``max_tokens``).

    ``None`` means "the default" and is allowed for each.
    """
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise ValueError(f"max_tokens must be a whole number ≥ 1, got {max_tokens!r}.")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be ≥ 1 (the most tokens to generate), got {max_tokens}.")
    if temperature is not None:
        value = _number("temperature", temperature, "in [0, 2]")
        if not 0.0 <= value <= 2.0:
            raise ValueError(f"temperature must be in [0, 2] (0 = greedy), got {temperature!r}.")
    if top_p is not None:
        value = _number("top_p", top_p, "in (0, 1]")
        if not 0.0 < value <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus cut), got {top_p!r}.")
    if min_tokens is not None:
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 0:
            raise ValueError(f"min_tokens must be a whole number ≥ 0, got {min_tokens!r}.")
        if isinstance(max_tokens, int) and min_tokens > max_tokens:
            raise ValueError(f"min_tokens ({min_tokens}) cannot be more than max_tokens ({max_tokens}).")


def _number(name: str, value: object, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number {allowed}, got {value!r}.")
    number = float(value)
    if number != number:  # NaN compares false with every bound, so say so explicitly
        raise ValueError(f"{name} must be a number {allowed}, got NaN.")
    return number


def split_params(params: Mapping[str, Any], known: Sequence[str] | frozenset[str]) -> dict[str, Any]:
    """Moves every parameter openai's ``create`` does not know into ``extra_body`` (vLLM's ``top_k``, …).

    Returns:
        The keyword arguments for ``create``; a caller's own ``extra_body`` is kept and merged.
    """
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in params.items():
        if name in known:
            kwargs[name] = value
        else:
            extra[name] = value
    if extra:
        given = kwargs.get("extra_body")
        kwargs["extra_body"] = {**extra, **given} if isinstance(given, Mapping) else extra
    return kwargs
