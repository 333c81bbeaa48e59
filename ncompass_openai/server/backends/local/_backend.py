"""The local backend: requests decoded here by the runtime's engine, under grammars and the tool format.

``prepare_*`` does every check that needs the engine (a schema it can enforce, a template that renders,
token ids it has) and renders the prompt, before the request is admitted; the returned ``start`` queues
it on the runtime. Tools are planned by ``_tools.py``: the model writes one JSON object under a grammar,
and the stream is reshaped (:class:`ToolAnswer`) so serving receives text or typed tool-call deltas as
from any backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from ..._exceptions import ChatTemplateError, ContextLengthError, InvalidRequest
from ...protocol._responses import ResponseRequest, to_chat_request
from ...protocol._schemas import ChatCompletionRequest, CompletionRequest
from ...runtime._bridge import GenerationStream
from ...runtime._runtime import InferenceRuntime, SamplingParams
from ...runtime._stop import Watch
from .._base import Backend, Start
from ._grammar import format_grammar
from ._sampling import sampling
from ._tools import CallListWatch, ToolAnswer, ToolPlan, plan_tools, render_history

__all__ = ["LocalBackend"]

_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for completions
_CHAT_MAX_TOKENS = 4096  # the cap on "the room the context leaves" when a chat request sets no limit


class LocalBackend(Backend):
    """Answers from an engine run here, through :class:`InferenceRuntime` (its fair queue and worker).

    Args:
        runtime: the runtime of the engine to serve.
    """

    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime = runtime
        self.max_queue_per_key = runtime.max_queue_per_key

    # ------------------------------------------------------------------ lifecycle
    @property
    def model_id(self) -> str:
        return self.runtime.model_id

    @property
    def loaded(self) -> bool:
        return self.runtime.loaded

    @property
    def engine_name(self) -> str:
        return self.runtime.engine_name

    async def load(self, tenant_id: str | None = None) -> None:
        await self.runtime.load(tenant_id)

    async def unload(self, tenant_id: str | None = None) -> None:
        await self.runtime.unload(tenant_id)

    async def aclose(self) -> None:
        await self.runtime.aclose()

    def inflight(self, tenant: str) -> int:
        return self.runtime.inflight(tenant)

    def requests_by_tenant(self) -> dict[str, tuple[int, int]]:
        return self.runtime.requests_by_tenant()

    def parallel_tool_calls_default(self, chat_template: str | None = None) -> bool:
        """What the model's (or the request's) chat template can express, as llama.cpp's server decides it:
        two calls in one assistant turn, or one."""
        return self.runtime.renders_parallel_calls(chat_template)

    # ------------------------------------------------------------------ answers
    async def prepare_completion(self, req: CompletionRequest) -> Start:
        prompts = req.prompts()
        params = sampling(self.runtime, req, req.max_tokens or _COMPLETION_MAX_TOKENS)

        async def start(tenant: str) -> GenerationStream:
            return self._generate(tenant, prompts, params, req, "prompt")

        return start

    async def prepare_chat(self, req: ChatCompletionRequest) -> Start:
        grammar, plan = await anyio.to_thread.run_sync(
            self._constraints, req
        )  # a new schema may take a while
        prompt = self._prompt(req, plan)

        async def start(tenant: str) -> GenerationStream:
            params = sampling(self.runtime, req, self._token_limit(req, prompt), grammar)
            if plan is None:
                return self._generate(tenant, [prompt], params, req, "messages")
            max_calls = plan.max_calls
            watch = lambda: CallListWatch(params.max_tokens, max_calls)  # noqa: E731
            stream = self._generate(tenant, [prompt], params, req, "messages", watch)
            return stream.reshape_with(ToolAnswer(), holds_answer=True, may_call=True)

        return start

    async def prepare_response(self, req: ResponseRequest, conversation: list[dict[str, Any]]) -> Start:
        return await self.prepare_chat(to_chat_request(req, conversation))

    # ------------------------------------------------------------------ helpers
    def _generate(
        self,
        tenant: str,
        prompts: Sequence[str],
        params: SamplingParams,
        req: CompletionRequest | ChatCompletionRequest,
        prompt_param: str,
        watch: Callable[[], Watch] | None = None,
    ) -> GenerationStream:
        """Queue the generation; ``prompt_param`` is the field a too-long prompt is blamed on."""
        try:
            return self.runtime.generate(tenant, prompts, params, n=req.n, stop=req.stop_list(), watch=watch)
        except ContextLengthError as exc:
            message = _too_long(exc, prompt_param, _limit_field(req))
            raise InvalidRequest(message, param=prompt_param, code="context_length_exceeded") from None

    def _constraints(self, req: ChatCompletionRequest) -> tuple[str | None, ToolPlan | None]:
        """The grammar of the answer, and the tool plan when tools are in play (mutually exclusive)."""
        parallel = req.parallel_tool_calls
        if parallel is None:
            parallel = self.parallel_tool_calls_default(req.chat_template)
        plan = plan_tools(self.runtime, req.function_specs(), req.tool_choice_name(), parallel)
        if plan is not None:
            return plan.grammar, plan
        fmt = req.response_format
        if fmt is None:
            return None, None
        schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
        param = "response_format.json_schema" if fmt.type == "json_schema" else "response_format"
        return format_grammar(self.runtime, fmt.type, schema, param), None

    def _prompt(self, req: ChatCompletionRequest, plan: ToolPlan | None) -> str:
        try:
            return self.runtime.render_chat(
                render_history(req.message_dicts(), plan.instruction if plan is not None else None),
                add_generation_prompt=req.add_generation_prompt,
                continue_final_message=req.continue_final_message,
                chat_template=req.chat_template,
                chat_template_kwargs=req.chat_template_kwargs,
                tools=[tool.model_dump(exclude_none=True) for tool in req.tools or []] or None,
            )
        except ChatTemplateError as exc:
            if req.chat_template is not None:
                param, where = "chat_template", "the request's `chat_template`"
            else:
                param, where = "messages", "the model's chat template (field `messages`)"
            raise InvalidRequest(
                f"Could not render {where}: {exc}", param=param, code="chat_template_error"
            ) from None

    def _token_limit(self, req: ChatCompletionRequest, prompt: str) -> int:
        limit = req.token_limit()
        if limit is not None:
            return limit
        # Like vLLM: no limit means the room the context leaves after the prompt (capped, so an engine with
        # a huge context cannot be asked for an endless answer by omission).
        used, room = self.runtime.count_tokens(prompt), self.runtime.context_length
        if used >= room:
            raise InvalidRequest(
                f"The conversation is {used} tokens and this model's context holds {room}, which leaves no "
                "room for an answer: drop or shorten earlier turns (long tool results first) and send it "
                "again.",
                param="messages",
                code="context_length_exceeded",
            )
        return min(_CHAT_MAX_TOKENS, room - used)


def _limit_field(req: CompletionRequest | ChatCompletionRequest) -> str | None:
    """The token-limit field the client sent, if any."""
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        return "max_completion_tokens"
    return "max_tokens" if req.max_tokens is not None else None


def _too_long(exc: ContextLengthError, prompt_param: str, limit_field: str | None) -> str:
    """The context-overflow message, naming only what the client sent."""
    where = f"prompt {exc.index}" if prompt_param == "prompt" else "the conversation"
    asked = f"`{limit_field}`" if limit_field is not None else "the default `max_tokens` (left out)"
    room = exc.context_length - exc.prompt_tokens
    fix = f"set `{limit_field or 'max_tokens'}` to at most {room}" if room > 0 else "drop earlier turns"
    return (
        f"This model's context holds {exc.context_length} tokens; {where} is {exc.prompt_tokens} tokens and "
        f"{asked} asks for {exc.max_tokens} more: {fix}, or shorten `{prompt_param}`."
    )
