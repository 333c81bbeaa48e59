"""The hand-over of generated tokens from the worker thread to the event loop.

The worker pushes :class:`GenerationEvent` items (then :data:`END`, or an exception) into a request's
:class:`Sink`; serving iterates the :class:`GenerationStream` on the event loop. A gateway's reader
pushes the same items, and :class:`Usage`, from the loop itself (:class:`LoopSink`). The worker never
blocks on the loop and the loop never waits on the worker: one ``call_soon_threadsafe`` wakes the
reader per batch of items.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from ._events import GenerationEvent, Usage

__all__ = ["END", "GenerationStream", "LoopSink", "Sink"]

END = object()
"""Pushed after a request's last event."""


class Sink:
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


class LoopSink(Sink):
    """A sink fed on the event loop's own thread (the gateway's relays): no cross-thread wake-up."""

    def push(self, item: Any) -> bool:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True


_YIELD_EVERY = 4  # below asyncio's 5 failed writes that log "socket.send() raised exception."


Reshape = Callable[[GenerationEvent], Iterable[GenerationEvent]]
"""A backend's rewriting of each event as it is read (the local tool format parsed into tool calls)."""


class GenerationStream(AsyncIterator[GenerationEvent]):
    """The async iterator of one request's events; closing it cancels the request.

    Args:
        sink: where the producer's items arrive.
        prompt_token_counts: each prompt's tokens (an upstream's :class:`Usage` replaces them).
        n: choices per prompt.
        cancel: stops the request's generation (called once, when the stream closes early).
        may_call: the answer may carry tool calls (:meth:`reshape_with` sets it, with a reshaping).
    """

    def __init__(
        self,
        sink: Sink,
        prompt_token_counts: list[int],
        n: int,
        *,
        cancel: Callable[[], object] = lambda: None,
        may_call: bool = False,
    ) -> None:
        self.prompt_token_counts = prompt_token_counts
        self.n = n
        self.holds_answer = False
        """The answer's text and calls come whole at its end (the events before carry none)."""
        self.may_call = may_call
        self._sink = sink
        self._closed = False
        self._cancel = cancel
        self._reshape: Reshape | None = None
        self._reshaped: collections.deque[GenerationEvent] = collections.deque()
        self._ready_in_a_row = 0
        self._reported_completion_tokens: int | None = None
        self.hung_up = False
        """The client went away before the stream ended (see :meth:`hang_up`)."""
        self.cached_tokens = 0
        """Prompt tokens the engine reused from its prompt cache, over the events read so far."""

    def completion_tokens(self, counted: int) -> int:
        """The request's completion tokens: an upstream's report, else ``counted`` from the events."""
        return counted if self._reported_completion_tokens is None else self._reported_completion_tokens

    def reshape_with(self, reshape: Reshape, *, holds_answer: bool, may_call: bool) -> GenerationStream:
        """Rewrite each event with ``reshape`` from now on (a backend's, right after it starts the stream)."""
        self._reshape, self.holds_answer, self.may_call = reshape, holds_answer, may_call
        return self

    def _take_usage(self, usage: Usage) -> None:
        self.prompt_token_counts = [usage.prompt_tokens]
        self._reported_completion_tokens = usage.completion_tokens
        self.cached_tokens = usage.cached_tokens

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of the request (each prompt once, as OpenAI counts them with ``n > 1``)."""
        return sum(self.prompt_token_counts)

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        if self._reshaped:
            return self._reshaped.popleft()
        while True:
            if self._closed:
                raise StopAsyncIteration
            item = self._sink.pop()
            if item is END:
                self._closed = True
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                self._closed = True
                raise item
            if isinstance(item, Usage):
                self._take_usage(item)
                continue
            if item is not None:
                assert isinstance(item, GenerationEvent)
                self.cached_tokens += item.cached_tokens
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
                if self._reshape is None:
                    return item
                self._reshaped.extend(self._reshape(item))
                if self._reshaped:
                    return self._reshaped.popleft()
                continue
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

    def hang_up(self) -> None:
        """The client is gone: stop generating, and end the iteration at once (``hung_up`` tells why)."""
        if self._closed:
            return
        self.hung_up = True
        self._close_now()
        waiter = self._sink.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def aclose(self) -> None:
        """Stop the request's generation now and free its queue place."""
        self._close_now()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._close_now()
