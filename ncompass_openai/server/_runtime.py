"""The inference runtime: one worker thread, a fair per-tenant queue, stop strings, streaming to asyncio.

Routes use only this module (never an engine directly)::

    runtime = InferenceRuntime(make_engine("llama", model_path=None, threads=None), max_queue_per_key=8)
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

Scheduling: requests wait in one queue per tenant (API key), served round-robin; the engine decodes up to
``engine.max_batch`` sequences together, and takes new sequences (of any tenant) into free slots as others
finish (continuous batching). A tenant may have at most ``max_queue_per_key`` requests queued or running.
With ``seed`` set, sequence ``j`` of a prompt uses ``seed + j``, so a prompt gives the same text alone or
in a batch.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import math
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ._chat_template import ChatTemplateError, render_chat_template
from .engines._base import DEFAULT_CHAT_TEMPLATE, Engine, GenerationControl, SamplingParams, SequenceRequest

__all__ = [
    "ChatTemplateError",
    "ContextLengthError",
    "GenerationEvent",
    "GenerationStream",
    "InferenceRuntime",
    "ModelUnavailableError",
    "QueueFullError",
    "SamplingParams",
    "make_engine",
]

FinishReason = Literal["stop", "length"]


class QueueFullError(Exception):
    """The tenant already has as many requests queued or running as allowed (the route answers 429)."""

    def __init__(self, retry_after: int, limit: int) -> None:
        self.retry_after = retry_after
        self.limit = limit
        super().__init__(
            f"Too many requests in flight for this API key (at most {limit} queued or running): wait for "
            f"one to finish and retry in {retry_after} s."
        )


class ContextLengthError(ValueError):
    """A prompt plus ``max_tokens`` does not fit the model's context (the route answers 400)."""

    def __init__(self, prompt_tokens: int, max_tokens: int, context_length: int, index: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length
        self.index = index
        super().__init__(
            f"This model's maximum context length is {context_length} tokens, but prompt {index} has "
            f"{prompt_tokens} tokens and max_tokens is {max_tokens}: shorten the prompt or lower max_tokens."
        )


class ModelUnavailableError(RuntimeError):
    """The model is not loaded (or was unloaded while the request waited): the route answers 503."""


@dataclass(frozen=True)
class GenerationEvent:
    """One generated token of choice ``index``: its newly released text, and the running token count."""

    index: int
    text: str
    finish_reason: FinishReason | None
    completion_tokens: int


def make_engine(name: str, model_path: str | None = None, threads: int | None = None) -> Engine:
    """Build an engine by name.

    Args:
        name: ``"llama"`` (llama-cpp-python; SmolLM2-135M-Instruct unless ``model_path``) or
            ``"synthetic"`` (deterministic fake tokens, no model).
        model_path: a GGUF file for the llama engine.
        threads: CPU threads for the llama engine (default: all cores).

    Raises:
        ValueError: unknown engine name.
    """
    if name == "synthetic":
        from .engines.synthetic import SyntheticEngine

        return SyntheticEngine()
    if name == "llama":
        from .engines.llama import LlamaEngine

        return LlamaEngine(model_path=model_path, threads=threads)
    raise ValueError(f"Unknown engine {name!r}: use 'llama' or 'synthetic'.")


_END = object()


class _StopMatcher:
    """Releases text as it arrives, holding back any tail that could still start a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to send, whether a stop string matched)."""
        if not self._stops:
            return text, False
        buf = self._buf + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._buf = ""
            return buf[: min(hits)], True
        keep = 0
        for k in range(min(self._hold, len(buf)), 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self._stops):
                keep = k
                break
        self._buf = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self._buf = self._buf, ""
        return out


class _Request:
    """One API request: its sequences, progress, and the stream its events go to."""

    def __init__(
        self, tenant: str, sequences: list[tuple[str, SamplingParams]], stop: Sequence[str], sink: _Sink
    ) -> None:
        self.tenant = tenant
        self.sequences = sequences
        self.stop = tuple(stop)
        self.sink = sink  # never the stream itself, so a dropped stream can be garbage-collected
        self.admitted = 0  # sequences handed to the engine so far
        self.finished = 0
        self.seq_ids: list[int] = []
        self.control: GenerationControl | None = None
        self.done = False
        self.started_at: float | None = None


class _Seq:
    __slots__ = ("done", "index", "matcher", "request", "tokens")

    def __init__(self, request: _Request, index: int) -> None:
        self.request = request
        self.index = index
        self.matcher = _StopMatcher(request.stop)
        self.tokens = 0
        self.done = False


class _Sink:
    """The hand-over from the worker thread to the event loop: a deque, and one wake-up call at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: collections.deque[Any] = collections.deque()
        self.lock = threading.Lock()
        self.wake_pending = False
        self.waiter: asyncio.Future[None] | None = None

    def push(self, item: Any) -> bool:
        """Worker side: queue an item; False when the loop is gone."""
        with self.lock:
            self.items.append(item)
            wake = not self.wake_pending
            self.wake_pending = True
        if wake:
            try:
                self.loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed: nobody will ever read this stream
                return False
        return True

    def _wake(self) -> None:
        with self.lock:
            self.wake_pending = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def pop(self) -> Any:
        with self.lock:
            return self.items.popleft() if self.items else None


_YIELD_EVERY = 4  # below asyncio's 5 failed writes that log "socket.send() raised exception."


class GenerationStream(AsyncIterator[GenerationEvent]):
    """The async iterator :meth:`InferenceRuntime.generate` returns; closing it cancels the request."""

    def __init__(self, sink: _Sink, prompt_token_counts: list[int], n: int) -> None:
        self.prompt_token_counts = prompt_token_counts
        self.n = n
        self._sink = sink
        self._closed = False
        self._cancel: Callable[[], None] = lambda: None
        self._ready_in_a_row = 0

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of the request (each prompt once, as OpenAI counts them with ``n > 1``)."""
        return sum(self.prompt_token_counts)

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            item = self._sink.pop()
            if item is _END:
                self._closed = True
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                self._closed = True
                raise item
            if item is not None:
                assert isinstance(item, GenerationEvent)
                self._ready_in_a_row += 1
                if self._ready_in_a_row >= _YIELD_EVERY:
                    # Tokens buffered faster than they are sent never suspend this loop, and a writer that
                    # never suspends starves the event loop: a client's disconnect would go unseen (and
                    # its generation would run on) until the whole answer had been written to a dead socket.
                    self._ready_in_a_row = 0
                    try:
                        await asyncio.sleep(0)
                    except BaseException:
                        self._close_now()
                        raise
                return item
            self._ready_in_a_row = 0
            waiter = self._sink.waiter = self._sink.loop.create_future()
            try:
                await waiter
            except BaseException:
                # The consumer's task was cancelled (client gone): stop generating for it.
                self._close_now()
                raise
            finally:
                self._sink.waiter = None

    def _close_now(self) -> None:
        if not self._closed:
            self._closed = True
            self._cancel()

    async def aclose(self) -> None:
        """Stop the request's generation now and free its queue place."""
        self._close_now()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._close_now()


class _Job:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class InferenceRuntime:
    """Runs one engine on one worker thread behind a fair, bounded, per-tenant queue.

    Args:
        engine: the engine to drive (see :func:`make_engine`).
        max_queue_per_key: requests one tenant may have queued or running at once; one more raises
            :class:`QueueFullError`.
    """

    def __init__(self, engine: Engine, *, max_queue_per_key: int = 8) -> None:
        if max_queue_per_key < 1:
            raise ValueError("max_queue_per_key must be at least 1.")
        self.engine = engine
        self.max_queue_per_key = max_queue_per_key
        self._cond = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._pending: dict[str, collections.deque[_Request]] = {}
        self._tenant_order: collections.deque[str] = collections.deque()
        self._inflight: dict[str, int] = collections.defaultdict(int)
        self._running: set[_Request] = set()
        self._control: GenerationControl | None = None
        self._vocab_lock = threading.Lock()  # count_tokens (event loop) vs unload (worker)
        self._service_time = 1.0  # moving average of a request's seconds, for Retry-After
        self._closing = False
        self._thread: threading.Thread | None = None

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

    async def load(self) -> None:
        """Load the model on the worker thread (the event loop stays free)."""
        await self._submit(self.engine.load)

    async def unload(self) -> None:
        """Fail every queued and running request with :class:`ModelUnavailableError`, then free the model."""
        self._fail_all(ModelUnavailableError("The model was stopped before this request finished."))

        def unload() -> None:
            with self._vocab_lock:
                self.engine.unload()

        await self._submit(unload)

    async def aclose(self) -> None:
        """Unload and stop the worker thread."""
        if self.engine.loaded:
            await self.unload()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 30)

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
        template = chat_template or self.engine.chat_template() or DEFAULT_CHAT_TEMPLATE
        return render_chat_template(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            special_tokens=self.engine.special_tokens(),
            tools=tools,
            template_kwargs=chat_template_kwargs,
        )

    # ------------------------------------------------------------ generation
    def inflight(self, tenant: str) -> int:
        """Requests of ``tenant`` queued or running."""
        with self._cond:
            return self._inflight.get(tenant, 0)

    def generate(
        self,
        tenant: str,
        prompts: Sequence[str],
        params: SamplingParams,
        n: int = 1,
        stop: Sequence[str] = (),
    ) -> GenerationStream:
        """Queue a request and return the async iterator of its events.

        Must be called from the event loop that consumes the stream. Nothing is queued if it raises.

        Args:
            tenant: who asks (the API key's identity); the queue is fair between tenants.
            prompts: one or more prompts (a list prompt is one batch).
            params: sampling settings shared by all sequences.
            n: completions per prompt; event ``index = prompt_i * n + j``.
            stop: stop strings; generation of a sequence ends before the first match.

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
        with self._cond:
            if self._inflight.get(tenant, 0) >= self.max_queue_per_key:
                raise QueueFullError(self._retry_after(tenant), self.max_queue_per_key)
        counts = [self.count_tokens(p) for p in prompts]
        for i, count in enumerate(counts):
            if count + params.max_tokens > self.engine.context_length:
                raise ContextLengthError(count, params.max_tokens, self.engine.context_length, i)
        sequences: list[tuple[str, SamplingParams]] = []
        for prompt in prompts:
            for j in range(n):
                seed = params.seed + j if params.seed is not None else None
                sequences.append((prompt, replace(params, seed=seed)))
        sink = _Sink(loop)
        stream = GenerationStream(sink, counts, n)
        request = _Request(tenant, sequences, stop, sink)
        with self._cond:
            # Checked again: another request of the tenant may have been queued while we tokenized.
            if self._inflight.get(tenant, 0) >= self.max_queue_per_key:
                raise QueueFullError(self._retry_after(tenant), self.max_queue_per_key)
            if self._closing:
                raise ModelUnavailableError("The server is shutting down.")
            self._inflight[tenant] += 1
            if tenant not in self._pending:
                self._pending[tenant] = collections.deque()
                self._tenant_order.append(tenant)
            self._pending[tenant].append(request)
            self._ensure_thread()
            self._cond.notify_all()
        stream._cancel = lambda: self._cancel(request)
        # A stream dropped without being closed (a route that failed before iterating) still frees its slot.
        fin = weakref.finalize(stream, self._cancel, request)
        fin.atexit = False
        return stream

    def _retry_after(self, tenant: str) -> int:
        waiting = self._inflight.get(tenant, 0)
        estimate = self._service_time * waiting / max(1, self.engine.max_batch)
        return int(min(60, max(1, math.ceil(estimate))))

    def _release(self, request: _Request) -> None:
        """Mark a request finished and free its queue place (caller holds ``_cond``)."""
        if request.done:
            return
        request.done = True
        self._running.discard(request)
        left = self._inflight[request.tenant] - 1
        if left > 0:
            self._inflight[request.tenant] = left
        else:
            self._inflight.pop(request.tenant, None)
        queue = self._pending.get(request.tenant)
        if queue is not None and request in queue:
            queue.remove(request)
            if not queue:
                del self._pending[request.tenant]
                self._tenant_order.remove(request.tenant)
        if request.control is not None:
            for seq_id in request.seq_ids:
                request.control.stop(seq_id)
        if request.started_at is not None:
            elapsed = time.monotonic() - request.started_at
            self._service_time = 0.8 * self._service_time + 0.2 * elapsed

    def _cancel(self, request: _Request) -> None:
        with self._cond:
            self._release(request)

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            requests = [r for q in self._pending.values() for r in q] + list(self._running)
            for request in requests:
                self._release(request)
                request.sink.push(error)
            if self._control is not None:
                self._control.cancel()

    # ---------------------------------------------------------- worker thread
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._worker, name="ncompass-inference", daemon=True)
            self._thread.start()

    async def _submit(self, fn: Callable[[], Any]) -> Any:
        job = _Job(fn)
        with self._cond:
            self._jobs.append(job)
            self._ensure_thread()
            self._cond.notify_all()
        return await asyncio.wrap_future(job.future)

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._tenant_order and not self._closing:
                    self._cond.wait()
                if self._jobs:
                    job: _Job | None = self._jobs.popleft()
                elif self._tenant_order:
                    job = None
                else:
                    return
            if job is not None:
                try:
                    job.future.set_result(job.fn())
                except BaseException as exc:
                    job.future.set_exception(exc)
                continue
            self._generate_round()

    def _take(self, control: GenerationControl, seqs: dict[int, _Seq], free: int) -> list[SequenceRequest]:
        """Hand the engine up to ``free`` new sequences, one request per tenant in turn."""
        out: list[SequenceRequest] = []
        with self._cond:
            if self._jobs:  # a load/unload waits: let the engine drain instead of admitting more
                return out
            while free > 0 and self._tenant_order:
                tenant = self._tenant_order.popleft()
                queue = self._pending[tenant]
                request = queue[0]
                if request.started_at is None:
                    request.started_at = time.monotonic()
                    request.control = control
                    self._running.add(request)
                while free > 0 and request.admitted < len(request.sequences):
                    prompt, params = request.sequences[request.admitted]
                    seq_id = _next_id()
                    seqs[seq_id] = _Seq(request, request.admitted)
                    request.seq_ids.append(seq_id)
                    request.admitted += 1
                    free -= 1
                    out.append(SequenceRequest(seq_id, prompt, params))
                if request.admitted == len(request.sequences):
                    queue.popleft()
                if queue:
                    self._tenant_order.append(tenant)
                else:
                    del self._pending[tenant]
        return out

    def _generate_round(self) -> None:
        control = GenerationControl()
        seqs: dict[int, _Seq] = {}
        with self._cond:
            self._control = control
        try:
            for token in self.engine.generate(lambda free: self._take(control, seqs, free), control):
                seq = seqs.get(token.id)
                if seq is None or seq.done:
                    continue
                request = seq.request
                if request.done:
                    seq.done = True
                    continue
                seq.tokens += 1
                text, matched = seq.matcher.feed(token.text)
                finish: FinishReason | None = "stop" if matched else token.finish_reason
                if finish is not None:
                    if not matched:
                        text += seq.matcher.flush()
                    seq.done = True
                    del seqs[token.id]
                    control.stop(token.id)
                ok = request.sink.push(GenerationEvent(seq.index, text, finish, seq.tokens))
                if not ok:
                    self._cancel(request)
                    continue
                if finish is not None:
                    request.finished += 1
                    if request.finished == len(request.sequences):
                        with self._cond:
                            self._release(request)
                        request.sink.push(_END)
        except BaseException as exc:
            with self._cond:
                failed = [r for r in self._running if r.control is control]
                for request in failed:
                    self._release(request)
            for request in failed:
                request.sink.push(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        finally:
            with self._cond:
                self._control = None
                # Requests the engine admitted but dropped without finishing (it was cancelled).
                leftover = [r for r in self._running if r.control is control]
                for request in leftover:
                    self._release(request)
            for request in leftover:
                request.sink.push(ModelUnavailableError("Generation was interrupted."))


_ids = iter(range(1, 1 << 62))
_ids_lock = threading.Lock()


def _next_id() -> int:
    with _ids_lock:
        return next(_ids)


def default_threads() -> int:
    """Threads the llama engine uses when none are given: every core."""
    return os.cpu_count() or 1
