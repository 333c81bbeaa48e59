"""The inference runtime: what the local backend calls to load a model, count tokens, render chat, generate.

The local backend uses only this module (never an engine directly)::

    runtime = InferenceRuntime(make_engine("llama"), max_queue_per_key=8)   # engines.make_engine
    await runtime.load()                      # on the worker thread; the event loop stays free
    prompt = runtime.render_chat(messages, add_generation_prompt=True)   # ChatTemplateError -> 400
    stream = runtime.generate(tenant, [prompt], SamplingParams(max_tokens=32), n=1, stop=("\\n",))
    # ^ raises QueueFullError(retry_after) at once -> 429, ContextLengthError -> 400,
    #   ModelUnavailableError -> 503; nothing is queued then.
    stream.prompt_tokens                      # for usage (each prompt counted once, whatever n)
    async for event in stream:                # GenerationEvent(index, text, finish_reason, completion_tokens)
        ...
    await stream.aclose()                     # early close: generation of this request stops at once

Events: one per generated token, so a stream's events of one ``index`` number exactly its final
``completion_tokens`` (``text`` may be ``""`` while a possible stop string or a multibyte character is held
back; send it anyway as a chunk). ``index = prompt_i * n + j``. The last event of each index carries its
``finish_reason`` (``"stop"``: end of sequence or a stop string, whose text never appears; ``"length"``)
and the final ``completion_tokens``. Indices interleave when a batch decodes together.

Scheduling is ``_scheduler.py``'s (a fair queue per tenant, continuous batching on one worker thread);
the hand-over of tokens to the event loop is ``_bridge.py``'s, stop strings ``_stop.py``'s. With ``seed``
set, sequence ``j`` of a prompt uses ``seed + j``, so a prompt gives the same text alone or in a batch.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .._exceptions import ContextLengthError, ModelUnavailableError
from ..engines._base import DEFAULT_CHAT_TEMPLATE, Engine, SamplingParams, TokenLogprobs
from ._bridge import GenerationStream, Sink
from ._chat_template import render_chat_template, renders_parallel_calls
from ._events import GenerationEvent
from ._scheduler import Job, Scheduler
from ._stop import Watch

__all__ = [
    "GenerationEvent",
    "GenerationStream",
    "InferenceRuntime",
    "SamplingParams",
    "TokenLogprobs",
]


class InferenceRuntime:
    """Runs one engine on one worker thread behind a fair, bounded, per-tenant queue.

    Args:
        engine: the engine to drive (see :func:`make_engine`).
        max_queue_per_key: requests one tenant may have queued or running at once; one more raises
            :class:`QueueFullError`.
    """

    def __init__(self, engine: Engine, *, max_queue_per_key: int = 8) -> None:
        self.engine = engine
        self._scheduler = Scheduler(engine, max_queue_per_key)
        self.max_queue_per_key = max_queue_per_key
        self._vocab_lock = threading.Lock()  # count_tokens (event loop) vs unload (worker)

    # ------------------------------------------------------------------ model
    @property
    def model_id(self) -> str:
        """The model name the server reports."""
        return self.engine.model_id

    @property
    def loaded(self) -> bool:
        """Whether the engine's weights are in memory."""
        return self.engine.loaded

    @property
    def context_length(self) -> int:
        """Tokens one sequence may hold (prompt + completion)."""
        return self.engine.context_length

    @property
    def vocab_size(self) -> int | None:
        """How many token ids the model has (``None``: the engine has none, so no ``logit_bias``)."""
        return self.engine.vocab_size

    @property
    def engine_name(self) -> str:
        """The engine's name (``llama``, ``synthetic``, ...)."""
        return self.engine.name

    @property
    def supports_grammar(self) -> bool:
        """Whether the engine decodes under a grammar (``response_format``, tool calls)."""
        return self.engine.supports_grammar

    @property
    def supports_logprobs(self) -> bool:
        """Whether the engine reports token log probabilities (``logprobs``)."""
        return self.engine.supports_logprobs

    async def load(self, tenant_id: str | None = None) -> None:
        """Load the model on the worker thread (the event loop stays free)."""
        await self._scheduler.submit(self.engine.load)

    async def unload(self, tenant_id: str | None = None) -> None:
        """Fail every queued and running request with :class:`ModelUnavailableError`, then free the model."""
        self._scheduler.fail_all(ModelUnavailableError("The model was stopped before this request finished."))

        def unload() -> None:
            with self._vocab_lock:
                self.engine.unload()

        await self._scheduler.submit(unload)

    async def aclose(self) -> None:
        """Unload and stop the worker thread."""
        if self.engine.loaded:
            await self.unload()
        await self._scheduler.close()

    def count_tokens(self, text: str) -> int:
        """Prompt tokens of ``text`` for this model.

        Raises:
            ModelUnavailableError: the model is not loaded.
        """
        with self._vocab_lock:
            if not self.engine.loaded:
                raise ModelUnavailableError("The model is not loaded.")
            return self.engine.count_tokens(text)

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template: str | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Render chat messages into a prompt with the caller's or the model's template.

        Args:
            messages: OpenAI-style chat messages.
            add_generation_prompt: end with the header of the assistant's turn.
            continue_final_message: leave the final message open so generation continues it.
            chat_template: a Jinja template to use instead of the model's.
            chat_template_kwargs: extra template variables.
            tools: tool definitions handed to the template.

        Raises:
            ChatTemplateError: the template failed; the message says why.
        """
        return render_chat_template(
            self._template(chat_template),
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            special_tokens=self.engine.special_tokens(),
            tools=tools,
            template_kwargs=chat_template_kwargs,
        )

    def renders_parallel_calls(self, chat_template: str | None = None) -> bool:
        """Whether the caller's or the model's template can show two tool calls in one assistant turn."""
        return renders_parallel_calls(self._template(chat_template))

    def _template(self, chat_template: str | None) -> str:
        return chat_template or self.engine.chat_template() or DEFAULT_CHAT_TEMPLATE

    # ------------------------------------------------------------ generation
    def inflight(self, tenant: str) -> int:
        """Requests of ``tenant`` queued or running."""
        return self._scheduler.inflight(tenant)

    def requests_by_tenant(self) -> dict[str, tuple[int, int]]:
        """Each tenant's requests generating and waiting: ``{tenant: (running, queued)}``."""
        return self._scheduler.requests_by_tenant()

    def generate(
        self,
        tenant: str,
        prompts: Sequence[str],
        params: SamplingParams,
        n: int = 1,
        stop: Sequence[str] = (),
        watch: Callable[[], Watch] | None = None,
    ) -> GenerationStream:
        """Queue a request and return the async iterator of its events.

        Must be called from the event loop that consumes the stream. Nothing is queued if it raises.

        Args:
            tenant: who asks (the API key's identity); the queue is fair between tenants.
            prompts: one or more prompts (a list prompt is one batch).
            params: sampling settings shared by all sequences.
            n: completions per prompt; event ``index = prompt_i * n + j``.
            stop: stop strings; generation of a sequence ends before the first match.
            watch: makes each sequence's :data:`Watch`, which may end it early (the tool format's).

        Raises:
            QueueFullError: the tenant has ``max_queue_per_key`` requests in flight.
            ContextLengthError: a prompt plus ``max_tokens`` does not fit the context.
            ModelUnavailableError: the model is not loaded.
            ValueError: no prompts, or ``n < 1``.
        """
        if not prompts:
            raise ValueError("At least one prompt is needed.")
        if n < 1:
            raise ValueError("n must be at least 1.")
        loop = asyncio.get_running_loop()
        self._scheduler.check_room(tenant)
        counts = [self.count_tokens(p) for p in prompts]
        for i, count in enumerate(counts):
            if count + params.max_tokens > self.engine.context_length:
                raise ContextLengthError(count, params.max_tokens, self.engine.context_length, i)
        sequences: list[tuple[str, SamplingParams]] = []
        for prompt in prompts:
            for j in range(n):
                seed = params.seed + j if params.seed is not None else None
                sequences.append((prompt, replace(params, seed=seed)))
        sink = Sink(loop)
        request = Job(tenant, sequences, stop, sink, watch)
        stream = GenerationStream(sink, counts, n, cancel=lambda: self._scheduler.cancel(request))
        self._scheduler.enqueue(request)
        # A stream dropped without being closed (a route that failed before iterating) still frees its slot.
        fin = weakref.finalize(stream, self._scheduler.cancel, request)
        fin.atexit = False
        return stream
