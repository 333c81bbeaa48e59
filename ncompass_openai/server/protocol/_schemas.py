"""Request bodies of the OpenAI surface: OpenAI's fields plus vLLM's extras, nothing silently ignored.

A field the server does not know answers 400 naming it (``extra="forbid"``). OpenAI fields that the
local engines cannot honour are accepted only at their neutral value (``suffix=""``, ``best_of``
equal to ``n``), so an unchanged client works while a request that depends on them fails loudly instead
of getting a different answer than it asked for. What an engine cannot do (a grammar, logprobs, token
ids) is refused by the backend, which knows the engine. docs/openai-fields.md lists every field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Self

from .._exceptions import InvalidRequest
from ._refused_fields import CHAT, drop_neutral
from ._tools import FunctionSpec, check_tool_names

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "FunctionDefinition",
    "JSONSchemaFormat",
    "NamedToolChoice",
    "ResponseFormat",
    "StreamOptions",
    "Tool",
]

_MAX_N = 16
_MAX_STOP = 4
_MAX_LOGIT_BIAS = 300  # OpenAI's limit


def _unsupported(name: str, hint: str = "") -> ValueError:
    return ValueError(f"`{name}` is not supported by this server; remove it{hint}")


def _refused(name: str, neutral: Callable[[Any], bool]) -> AfterValidator:
    """A field accepted only at its neutral value (an unchanged client sends that); anything else is a 400."""

    def check(value: Any) -> Any:
        if not neutral(value):
            raise _unsupported(name)
        return value

    return AfterValidator(check)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, populate_by_name=True)


class StreamOptions(_Strict):
    include_usage: bool = False


_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's, for schema and function names


class JSONSchemaFormat(_Strict):
    """``response_format.json_schema``: the schema every answer must validate against."""

    name: str = Field(pattern=_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    """``response_format``: plain text, any JSON object, or JSON that validates against a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    def check(self) -> None:
        if self.type == "json_schema" and self.json_schema is None:
            raise InvalidRequest(
                "`response_format.json_schema` is required when `type` is `json_schema`.",
                param="response_format.json_schema",
            )
        if self.type != "json_schema" and self.json_schema is not None:
            raise InvalidRequest(
                f"`response_format.json_schema` is only allowed with `type: json_schema`, not `{self.type}`.",
                param="response_format.json_schema",
            )


class FunctionDefinition(_Strict):
    """``tools[i].function``."""

    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    """``tools[i]``: only function tools exist on chat completions."""

    type: Literal["function"]
    function: FunctionDefinition


class _FunctionName(_Strict):
    name: str = Field(min_length=1)


class NamedToolChoice(_Strict):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    type: Literal["function"]
    function: _FunctionName


class _Sampling(_Strict):
    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=_MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # vLLM's extras
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    min_tokens: int = Field(default=0, ge=0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > _MAX_STOP:
            raise ValueError(f"at most {_MAX_STOP} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if not value:
            return value
        if len(value) > _MAX_LOGIT_BIAS:
            raise ValueError(f"at most {_MAX_LOGIT_BIAS} token ids may be biased")
        for token, bias in value.items():
            if not token.isdigit():
                raise ValueError(f"the keys are token ids (whole numbers as strings), not {token!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"a bias is from -100 to 100, not {bias} (token {token})")
        return value

    def token_biases(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items())

    @model_validator(mode="after")
    def _cross_fields(self) -> Self:
        # Every body is checked as it is parsed, so no route can forget it; InvalidRequest (not a
        # ValueError) passes through pydantic as itself, naming its field.
        self.check()
        return self

    def check(self) -> None:
        """Conflicts between fields: a 400 naming the field to change."""
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest(
                "`stream_options` is only allowed together with `stream: true`.", param="stream_options"
            )

    def stop_list(self) -> tuple[str, ...]:
        stop = self.stop
        if stop is None:
            return ()
        return (stop,) if isinstance(stop, str) else tuple(stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    best_of: int | None = None
    suffix: Annotated[str | None, _refused("suffix", lambda v: not v)] = None

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("a list prompt must hold at least one string")
        return value

    def check(self) -> None:
        """Conflicts between fields: a 400 naming the field to change."""
        super().check()
        if self.echo and self.logprobs is not None:
            raise InvalidRequest(
                "`logprobs` together with `echo` (the prompt's logprobs) is not supported: remove one.",
                param="logprobs",
            )
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidRequest(
                "`best_of` is not supported unless it equals `n`; remove it.", param="best_of"
            )

    def logprob_count(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    """One message; extra keys are kept and handed to the chat template (tool calls, names, ...)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # vLLM's extras
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _neutral_fields(cls, data: Any) -> Any:
        """Refused fields sent at their neutral value (``metadata: {}``, ``store: false``) left out."""
        return drop_neutral(data, CHAT)

    def check(self) -> None:
        """Conflicts between fields: a 400 naming the field to change."""
        super().check()
        if self.response_format is not None:
            self.response_format.check()
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("`top_logprobs` needs `logprobs: true`.", param="top_logprobs")
        if self.logprobs and self.tool_plan_wanted():
            raise InvalidRequest(
                '`logprobs` together with `tools` is not supported: send `tool_choice: "none"` or remove '
                "`logprobs`.",
                param="logprobs",
            )
        check_tool_names(self.function_specs(), self.tool_choice_name())
        if (
            self.tool_plan_wanted()
            and self.response_format is not None
            and self.response_format.type != "text"
        ):
            raise InvalidRequest(
                "`response_format` and `tools` cannot be combined on this server: send `tool_choice: "
                '"none"` to get the formatted answer, or remove `response_format`.',
                param="response_format",
            )
        if self.add_generation_prompt and self.continue_final_message:
            raise InvalidRequest(
                "`add_generation_prompt` and `continue_final_message` cannot both be true: set "
                "`add_generation_prompt: false` to continue the final message.",
                param="continue_final_message",
            )
        if self.continue_final_message and self.messages[-1].role != "assistant":
            raise InvalidRequest(
                "`continue_final_message` needs the last message to be the assistant's.",
                param="continue_final_message",
            )
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise InvalidRequest(
                "`max_tokens` and `max_completion_tokens` disagree; send only one.", param="max_tokens"
            )

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def function_specs(self) -> list[FunctionSpec]:
        return [
            FunctionSpec(t.function.name, t.function.description, t.function.parameters)
            for t in self.tools or []
        ]

    def tool_choice_name(self) -> str | None:
        """``none``, ``auto``, ``required`` or a function's name (``auto``: tools without a choice)."""
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            return choice.function.name
        if choice is None and self.tools:
            return "auto"
        return choice

    def tool_plan_wanted(self) -> bool:
        return bool(self.tools) and self.tool_choice_name() != "none"

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def message_dicts(self) -> list[dict[str, Any]]:
        # Templates read `message.content` of every message: one sent without it (an assistant message
        # with only `tool_calls`, say) renders as empty text instead of failing the whole template.
        return [{**m.model_dump(exclude_none=True), "content": m.content or ""} for m in self.messages]
