"""The scheduler: a fair, bounded queue per tenant and the one worker thread that drives the engine.

Requests wait in one queue per tenant (API key), served round-robin; the engine decodes up to
``engine.max_batch`` sequences together, and takes new sequences (of any tenant) into free slots as others
finish (continuous batching). A tenant may have at most ``max_queue_per_key`` requests queued or running.
Loading and unloading run on the same worker thread, between generation rounds.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._exceptions import ModelUnavailableError, QueueFullError
from ..engines._base import Engine, GenerationControl, SamplingParams, SequenceRequest
from ._bridge import END, Sink
from ._events import FinishReason, GenerationEvent
from ._stop import StopMatcher, Watch

__all__ = ["Job", "Scheduler", "SequenceState"]


class Job:
    """One API request: its sequences, progress, and the stream its events go to."""

    def __init__(
        self,
        tenant: str,
        sequences: list[tuple[str, SamplingParams]],
        stop: Sequence[str],
        sink: Sink,
        watch: Callable[[], Watch] | None = None,
    ) -> None:
        self.tenant = tenant
        self.sequences = sequences
        self.stop = tuple(stop)
        self.watch = watch  # makes each sequence's watch (None: sequences end only by stop and limit)
        self.sink = sink  # never the stream itself, so a dropped stream can be garbage-collected
        self.admitted = 0  # sequences handed to the engine so far
        self.finished = 0
        self.seq_ids: list[int] = []
        self.control: GenerationControl | None = None
        self.done = False
        self.started_at: float | None = None


class SequenceState:
    """One sequence's per-step state while the engine decodes it: where its events go, its stop-string
    matcher, its watch and its token count. Everything a sequence carries from one step to the next lives
    here."""

    __slots__ = ("done", "index", "matcher", "request", "tokens", "watch")

    def __init__(self, request: Job, index: int) -> None:
        self.request = request
        self.index = index
        self.matcher = StopMatcher(request.stop)
        self.watch = request.watch() if request.watch is not None else None
        self.tokens = 0
        self.done = False


class _Job:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class Scheduler:
    """Queues requests fairly per tenant and runs them, and engine jobs, on one worker thread.

    Args:
        engine: the engine to drive.
        max_queue_per_key: requests one tenant may have queued or running at once.
    """

    def __init__(self, engine: Engine, max_queue_per_key: int) -> None:
        if max_queue_per_key < 1:
            raise ValueError("max_queue_per_key must be at least 1.")
        self.engine = engine
        self.max_queue_per_key = max_queue_per_key
        self._cond = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._pending: dict[str, collections.deque[Job]] = {}
        self._tenant_order: collections.deque[str] = collections.deque()
        self._inflight: dict[str, int] = collections.defaultdict(int)
        self._running: set[Job] = set()
        self._control: GenerationControl | None = None
        self._service_time = 1.0  # moving average of a request's seconds, for Retry-After
        self._closing = False
        self._thread: threading.Thread | None = None

    def inflight(self, tenant: str) -> int:
        """Requests of ``tenant`` queued or running."""
        with self._cond:
            return self._inflight.get(tenant, 0)

    def requests_by_tenant(self) -> dict[str, tuple[int, int]]:
        """Each tenant's requests generating and waiting: ``{tenant: (running, queued)}``."""
        with self._cond:
            running = collections.Counter(r.tenant for r in self._running)
            return {t: (running[t], n - running[t]) for t, n in self._inflight.items()}

    def check_room(self, tenant: str) -> None:
        """Raise :class:`QueueFullError` when ``tenant`` may not queue another request now."""
        with self._cond:
            if self._inflight.get(tenant, 0) >= self.max_queue_per_key:
                raise QueueFullError(self._retry_after(tenant), self.max_queue_per_key)

    def enqueue(self, request: Job) -> None:
        """Queue ``request`` behind its tenant's others; nothing is queued if it raises.

        Raises:
            QueueFullError: the tenant has ``max_queue_per_key`` requests in flight.
            ModelUnavailableError: the server is shutting down.
        """
        tenant = request.tenant
        with self._cond:
            # Checked again: another request of the tenant may have been queued meanwhile.
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

    def cancel(self, request: Job) -> None:
        """Stop ``request`` now (its sequences leave the batch at the next step) and free its place."""
        with self._cond:
            self._release(request)

    def fail_all(self, error: BaseException) -> None:
        """End every queued and running request with ``error``."""
        with self._cond:
            requests = [r for q in self._pending.values() for r in q] + list(self._running)
            for request in requests:
                self._release(request)
                request.sink.push(error)
            if self._control is not None:
                self._control.cancel()

    async def submit(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the worker thread (between generation rounds) and await its result."""
        job = _Job(fn)
        with self._cond:
            self._jobs.append(job)
            self._ensure_thread()
            self._cond.notify_all()
        return await asyncio.wrap_future(job.future)

    async def close(self) -> None:
        """Stop the worker thread once its current work is done."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 30)

    def _retry_after(self, tenant: str) -> int:
        waiting = self._inflight.get(tenant, 0)
        estimate = self._service_time * waiting / max(1, self.engine.max_batch)
        return int(min(60, max(1, math.ceil(estimate))))

    def _release(self, request: Job) -> None:
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

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._worker, name="ncompass-inference", daemon=True)
            self._thread.start()

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

    def _take(
        self, control: GenerationControl, seqs: dict[int, SequenceState], free: int
    ) -> list[SequenceRequest]:
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
                    seqs[seq_id] = SequenceState(request, request.admitted)
                    request.seq_ids.append(seq_id)
                    request.admitted += 1
                    free -= 1
                    out.append(SequenceRequest(seq_id, prompt, params, cache_group=tenant))
                if request.admitted == len(request.sequences):
                    queue.popleft()
                if queue:
                    self._tenant_order.append(tenant)
                else:
                    del self._pending[tenant]
        return out

    def _generate_round(self) -> None:
        control = GenerationControl()
        seqs: dict[int, SequenceState] = {}
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
                if finish is None and seq.watch is not None and seq.watch(text, seq.tokens):
                    finish = "stop"
                if finish is not None:
                    if not matched:
                        text += seq.matcher.flush()
                    seq.done = True
                    del seqs[token.id]
                    control.stop(token.id)
                event = GenerationEvent(
                    seq.index, text, finish, seq.tokens, token.logprobs, token.cached_tokens
                )
                ok = request.sink.push(event)
                if not ok:
                    self.cancel(request)
                    continue
                if finish is not None:
                    request.finished += 1
                    if request.finished == len(request.sequences):
                        with self._cond:
                            self._release(request)
                        request.sink.push(END)
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
