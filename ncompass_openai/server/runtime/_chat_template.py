"""Chat templates: Hugging Face style Jinja templates rendered in a sandbox.

A template may come from the model (GGUF metadata ``tokenizer.chat_template``) or from the caller (the
``chat_template`` field), so it is untrusted code: it runs in Jinja's ``ImmutableSandboxedEnvironment``
with the helpers Hugging Face templates expect (``raise_exception``, ``strftime_now``, a ``tojson``
that keeps non-ASCII text). Every failure becomes :class:`ChatTemplateError`, which the routes answer
with 400.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .._exceptions import ChatTemplateError

__all__ = ["ChatTemplateError", "render_chat_template", "renders_parallel_calls"]

_MAX_TEMPLATE_CHARS = 100_000
_MARKER = "\x00ncompass-continue\x00"


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"The chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kwargs: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kwargs)


@functools.lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def _text_of(content: Any, where: str) -> Any:
    """Join OpenAI text parts (``[{"type": "text", "text": ...}]``) into the string templates expect."""
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ChatTemplateError(
                    f"{where}: only text content parts ({{'type': 'text', 'text': ...}}) are supported "
                    "by this model."
                )
            texts.append(part["text"])
        return "".join(texts)
    return content


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    special_tokens: Mapping[str, str] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Render ``messages`` into one prompt string.

    Args:
        template: the Jinja source.
        messages: OpenAI-style messages (``role``, ``content``, and any extra keys the template uses).
        add_generation_prompt: append the header that starts the assistant's turn.
        continue_final_message: leave the last message open (its end-of-turn removed) so generation
            continues it; not together with ``add_generation_prompt``.
        special_tokens: ``bos_token`` / ``eos_token`` for the template.
        tools: tool definitions, passed to the template as ``tools``.
        template_kwargs: extra template variables (``chat_template_kwargs``); they cannot replace
            ``messages``.

    Raises:
        ChatTemplateError: the template is invalid, raised an exception, or the messages do not fit it.
    """
    if add_generation_prompt and continue_final_message:
        raise ChatTemplateError(
            "add_generation_prompt and continue_final_message cannot both be true: set "
            "add_generation_prompt to false to continue the final message."
        )
    if len(template) > _MAX_TEMPLATE_CHARS:
        raise ChatTemplateError(f"chat_template is longer than {_MAX_TEMPLATE_CHARS} characters.")
    normalized = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"messages[{i}] must be an object with 'role' and 'content'.")
        item = dict(message)
        if "content" in item:
            item["content"] = _text_of(item["content"], f"messages[{i}].content")
        normalized.append(item)
    if continue_final_message:
        if not normalized or not isinstance(normalized[-1].get("content"), str):
            raise ChatTemplateError("continue_final_message needs a final message with text content.")
        # A marker after the final content shows where the message ends, whatever the template wraps
        # around it (end-of-turn tokens, newlines); everything from the marker on is cut.
        normalized[-1]["content"] += _MARKER
    context: dict[str, Any] = dict(template_kwargs or {})
    context.update(special_tokens or {})
    context.update(
        messages=normalized,
        add_generation_prompt=add_generation_prompt,
        tools=list(tools) if tools is not None else None,
    )
    try:
        rendered = _compile(template).render(**context)
    except ChatTemplateError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"chat_template has a Jinja syntax error on line {exc.lineno}: {exc.message}"
        ) from exc
    except jinja2.exceptions.SecurityError as exc:
        raise ChatTemplateError(f"chat_template tried an operation the sandbox forbids: {exc}") from exc
    except Exception as exc:  # any runtime error inside untrusted template code
        raise ChatTemplateError(f"chat_template failed to render: {type(exc).__name__}: {exc}") from exc
    if continue_final_message:
        cut = rendered.rfind(_MARKER)
        if cut < 0:
            raise ChatTemplateError(
                "continue_final_message: the chat template does not render the final message's content "
                "verbatim, so it cannot be continued."
            )
        rendered = rendered[:cut]
    return rendered


_PROBE_NAMES = ("ncompass_probe_first", "ncompass_probe_second")


@functools.lru_cache(maxsize=32)
def renders_parallel_calls(template: str) -> bool:
    """Whether ``template`` renders both calls of an assistant message with two tool calls.

    llama.cpp's server asks the same of a model's template to default ``parallel_tool_calls``: a model
    whose template cannot show two calls in one turn was not trained to make them.
    """
    calls = [
        {"id": f"call_{k}", "type": "function", "function": {"name": name, "arguments": "{}"}}
        for k, name in enumerate(_PROBE_NAMES)
    ]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "?"},
        {"role": "assistant", "content": "", "tool_calls": calls},
    ]
    try:
        rendered = render_chat_template(template, messages, add_generation_prompt=False)
    except ChatTemplateError:
        return False
    return all(name in rendered for name in _PROBE_NAMES)
