"""The Responses API's request body, and its translation into the chat request the runtime decodes.

``POST /v1/responses`` takes ``input`` (a string, or a list of messages, ``function_call`` and
``function_call_output`` items), ``instructions``, ``max_output_tokens``, ``temperature``, ``top_p``,
``text.format`` (``text``, ``json_object``, ``json_schema``), function ``tools`` and ``tool_choice``,
``parallel_tool_calls``, ``stream``, ``store``, ``previous_response_id``, ``metadata``, ``user`` and
``max_tool_calls``. The fields of ``_refused_fields.RESPONSES`` are accepted at their neutral value only
(``include: []``, ``truncation: "disabled"``); any other field is a 400 naming it, and so is a built-in
tool (web search, file search, computer use, ...), which this server does not run. The conversation
becomes chat messages (``to_messages``), so structured outputs and tools are enforced exactly as on
``/v1/chat/completions``; a 400 raised there is renamed to the field of this request
(``response_format.json_schema`` is ``text.format``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .._exceptions import InvalidRequest
from ._refused_fields import RESPONSES, drop_neutral
from ._schemas import ChatCompletionRequest
from ._validation import validation_message

__all__ = ["ResponseRequest", "rename_fields", "rename_param", "to_chat_request", "to_items", "to_messages"]

_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
_BUILT_IN_TOOLS = (
    "web_search", "web_search_preview", "file_search", "computer", "computer_use_preview", "code_interpreter",
    "image_generation", "mcp", "local_shell", "shell", "apply_patch", "custom", "tool_search", "namespace",
)  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Part(_Strict):
    type: Literal["input_text", "output_text", "text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class MessageItem(_Strict):
    """An input message; ``content`` a string or text parts."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[_Part]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionCallItem(_Strict):
    """An earlier call of the model's (sent back with its output)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Strict):
    """The result of a call, for the model to continue with."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str
    id: str | None = None
    status: str | None = None


def _item_kind(value: Any) -> str:
    return str(value.get("type", "message")) if isinstance(value, dict) else "message"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_kind),
]


class FunctionTool(_Strict):
    """``tools[i]``: a function (the Responses API's flat shape)."""

    type: Literal["function"]
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(_Strict):
    """``text.format``."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, pattern=_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextOptions(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None  # the neutral value only


class FunctionChoice(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1)


class ResponseRequest(_Strict):
    """``POST /v1/responses``."""

    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    text: TextOptions | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)  # of built-in tools: none run here

    @model_validator(mode="before")
    @classmethod
    def _neutral_fields(cls, data: Any) -> Any:
        """Refused fields at their neutral value (``include: []``, ``truncation: "disabled"``) left out."""
        return drop_neutral(data, RESPONSES)

    @field_validator("tools", mode="before")
    @classmethod
    def _functions_only(cls, value: Any) -> Any:
        """A tool type other than ``function`` named before its fields are checked."""
        for i, tool in enumerate(value if isinstance(value, list) else []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                what = "a built-in tool" if kind in _BUILT_IN_TOOLS else "not a tool type this server knows"
                raise ValueError(
                    f"tools[{i}] has type {kind!r}, {what}: this server runs function tools only "
                    "(`type: function`); remove it"
                )
        return value

    def input_items(self) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)


def to_messages(items: list[MessageItem | FunctionCallItem | FunctionCallOutputItem]) -> list[dict[str, Any]]:
    """Input items as chat messages; consecutive ``function_call`` items make one assistant message."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return messages


def to_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages (``to_messages``'s) as input items again: what an upstream's ``/responses`` is sent."""
    items: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message["tool_call_id"],
                    "output": message["content"],
                }
            )
            continue
        if message.get("content") is not None:
            items.append({"type": "message", "role": message["role"], "content": message["content"]})
        for call in message.get("tool_calls") or ():
            function = call["function"]
            items.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": function["name"],
                    "arguments": function["arguments"],
                }
            )
    return items


def to_chat_request(req: ResponseRequest, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat request that decodes this response (``messages``: the whole conversation)."""
    if not messages:
        raise InvalidRequest("`input` is empty: send at least one message.", param="input")
    if req.instructions:
        messages = [{"role": "system", "content": req.instructions}, *messages]
    fields: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "parallel_tool_calls": req.parallel_tool_calls,
        "user": req.user,
    }
    tools = req.tools or []
    if tools:
        fields["tools"] = [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)} for t in tools
        ]
    choice = req.tool_choice
    if isinstance(choice, FunctionChoice):
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        fields["tool_choice"] = choice
    fmt = req.text.format if req.text is not None else None
    if fmt is not None and fmt.type != "text":
        response_format: dict[str, Any] = {"type": fmt.type}
        if fmt.type == "json_schema":
            if fmt.schema_ is None or fmt.name is None:
                raise InvalidRequest(
                    "`text.format` of type `json_schema` needs `name` and `schema`.", param="text.format"
                )
            response_format["json_schema"] = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict}
        fields["response_format"] = response_format
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:  # what the Responses fields let through and chat does not take
        message, param = validation_message(exc.errors())
        raise InvalidRequest(message, param=rename_param(param)) from None


_RENAMED = (
    ("response_format.json_schema.schema", "text.format.schema"),
    ("response_format.json_schema", "text.format"),
    ("response_format", "text.format"),
    ("max_tokens", "max_output_tokens"),
    ("messages", "input"),
)


def rename_param(param: str | None) -> str | None:
    """A chat request's field name as the field of the Responses request it came from."""
    if param is None:
        return None
    for chat, responses in _RENAMED:
        if param.startswith(chat):
            return responses + param[len(chat) :]
    if param.startswith("tools[") and ".function." in param:
        return param.replace(".function.", ".", 1)
    return param


def rename_fields(message: str) -> str:
    """A chat refusal's message with the fields it names (in backticks) as the Responses request's."""
    for chat, responses in _RENAMED:
        message = message.replace(f"`{chat}", f"`{responses}")
    return message
