"""The fast text path: a streamed completion read straight into its text pieces.

openai's ``Stream`` builds a pydantic chunk object for every server-sent event, which costs far more
than the network read it follows. The 0.0.x methods only hand out the text, so they take openai's raw
streaming response (``with_streaming_response``: auth, retries, headers and ``Idempotency-Key`` are
openai's as usual) and parse each event's JSON down to ``choices[i].text`` / ``choices[i].delta.content``
themselves.

The semantics are those of openai's ``Stream``, made stricter where it is silent:

- an in-stream ``data: {"error": {...}}`` event raises ``openai.APIError`` (as openai's ``Stream``
  does), carrying the error object as ``body`` and its ``code``/``type``/``param``;
- an event that is not JSON raises :class:`~ncompass_openai.StreamError` (never dropped silently);
- a body that ends, or a connection that is cut, before ``data: [DONE]`` raises
  :class:`~ncompass_openai.TruncatedStreamError` (openai's ``Stream`` ends quietly there); a stream that
  stays silent past the read timeout raises ``openai.APITimeoutError``;
- chunks without choices (the usage chunk of ``stream_options.include_usage``) are skipped;
- closing the stream, leaving a ``for`` loop early and dropping it, or exhausting it closes the HTTP
  response, so no connection is left checked out of the pool. After ``[DONE]`` the (empty) rest of the
  body is still read, so the connection goes back to the pool for the next request instead of being
  closed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from types import TracebackType
from typing import Any

import openai

from ._compat import httpx
from ._exceptions import StreamError, TruncatedStreamError
from ._sse import SSEParser as _SSEParser
from ._sse import loads as _loads

__all__ = ["AsyncTextStream", "TextStream", "open_async_text_stream", "open_text_stream"]


def _texts(event: dict[str, Any], chat: bool) -> list[str]:
    """The text pieces of one decoded chunk; raises on an in-stream error event."""
    choices = event.get("choices")
    if choices:
        pieces: list[str] = []
        for choice in choices:
            text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
            if text:
                pieces.append(text)
        return pieces
    return []


def _event_error(event: Any, request: httpx.Request) -> Exception | None:
    if not isinstance(event, dict):
        return StreamError(f"The server sent a stream event that is not a JSON object: {event!r:.200}")
    error = event.get("error")
    if not error:
        return None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = "The server reported an error in the middle of the stream."
    return openai.APIError(message, request, body=error)


def _not_json(data: bytes, err: ValueError) -> StreamError:
    excerpt = data[:200].decode("utf-8", "replace")
    return StreamError(f"The server sent a stream event that is not JSON ({err}): {excerpt!r}")


class _Finish:
    """Closes the response and runs the owner's callback exactly once, however the stream ends."""

    __slots__ = ("_done", "_on_close", "_response")

    def __init__(self, response: httpx.Response, on_close: Callable[[], None] | None) -> None:
        self._response = response
        self._on_close = on_close
        self._done = False

    def __call__(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._response.close()
        finally:
            if self._on_close is not None:
                self._on_close()

    async def aclose(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._response.aclose()
        finally:
            if self._on_close is not None:
                self._on_close()


class _Decoder:
    """The text pieces of a stream's body, chunk by chunk: the per-event work of both iterators."""

    __slots__ = ("_chat", "_feed", "_loads", "_parser", "_request", "done")

    def __init__(self, chat: bool, request: httpx.Request) -> None:
        self._parser = _SSEParser()
        self._feed = self._parser.feed
        self._chat = chat
        self._request = request
        self._loads = _loads  # read once per stream (the benchmark swaps it)
        self.done = False

    def feed(self, chunk: bytes) -> Iterator[str]:
        """The new text of one chunk of the body; a stream error event raises (after the text before it)."""
        chat = self._chat
        for data in self._feed(chunk):
            if self.done:
                continue
            if data == b"[DONE]":
                # Read on to the end of the body (nothing but its terminator should follow) so the
                # connection returns to the pool instead of being closed.
                self.done = True
                continue
            try:
                event = self._loads(data)
            except ValueError as err:
                raise _not_json(data, err) from None
            choices = event.get("choices") if type(event) is dict else None
            if choices:
                if len(choices) == 1:
                    choice = choices[0]
                    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if text:
                        yield text
                else:
                    yield from _texts(event, chat)
                continue
            error = _event_error(event, self._request)
            if error is not None:
                raise error

    def close(self) -> None:
        """At the end of the body: an answer without its final ``[DONE]`` is incomplete."""
        if not self.done:
            for data in self._parser.close():
                if data == b"[DONE]":
                    self.done = True
        if not self.done:
            raise TruncatedStreamError()


def _cut(err: Exception, request: httpx.Request) -> Exception:
    """A transport error mid-body: openai's timeout error, or the connection was cut (incomplete answer)."""
    if isinstance(err, httpx.TimeoutException):
        return openai.APITimeoutError(request=request)
    return TruncatedStreamError()


def _iter_text(response: httpx.Response, chat: bool, finish: _Finish) -> Generator[str, None, None]:
    try:
        # Primed by TextStream: from this point on the finally clause runs however the generator ends,
        # including when it is dropped unstarted by its consumer.
        yield ""
        decoder = _Decoder(chat, response.request)
        try:
            for chunk in response.iter_bytes():
                yield from decoder.feed(chunk)
        except httpx.TransportError as err:
            raise _cut(err, response.request) from err
        decoder.close()
    finally:
        finish()


async def _aiter_text(response: httpx.Response, chat: bool, finish: _Finish) -> AsyncGenerator[str, None]:
    try:
        yield ""
        decoder = _Decoder(chat, response.request)
        try:
            async for chunk in response.aiter_bytes():
                for text in decoder.feed(chunk):
                    yield text
        except httpx.TransportError as err:
            raise _cut(err, response.request) from err
        decoder.close()
    finally:
        await finish.aclose()


class TextStream:
    """An iterator over the new text pieces of one streamed completion (each piece once, in order).

    Iterate it, or call `close()` (or use it as a context manager) to stop early and free the
    connection. Dropping it, or leaving a ``for`` loop over it early, frees the connection as well.
    """

    def __init__(
        self, response: httpx.Response, *, chat: bool, on_close: Callable[[], None] | None = None
    ) -> None:
        """Wraps a streaming HTTP response whose body is OpenAI-style SSE.

        Args:
            response: the open streaming response; the stream owns it from now on and closes it.
            chat: True for ``chat.completion.chunk`` events (``delta.content``), False for
                ``text_completion`` events (``text``).
            on_close: called once when the response is closed.
        """
        self.response = response
        """The underlying HTTP response (headers, status, ``x-request-id``)."""
        self._gen = _iter_text(response, chat, _Finish(response, on_close))
        next(self._gen)

    def __iter__(self) -> Iterator[str]:
        return self._gen

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        """Stops reading and closes the response (idempotent)."""
        self._gen.close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncTextStream:
    """An async iterator over the new text pieces of one streamed completion.

    ``async for`` over it, or ``await stream.aclose()`` (or ``async with``) to stop early and free the
    connection.
    """

    def __init__(self, response: httpx.Response, gen: AsyncGenerator[str, None]) -> None:
        self.response = response
        """The underlying HTTP response (headers, status, ``x-request-id``)."""
        self._gen = gen

    def __aiter__(self) -> AsyncIterator[str]:
        return self._gen

    async def __anext__(self) -> str:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stops reading and closes the response (idempotent)."""
        await self._gen.aclose()

    async def __aenter__(self) -> AsyncTextStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def open_text_stream(
    response: httpx.Response, *, chat: bool, on_close: Callable[[], None] | None = None
) -> TextStream:
    """Wraps an open streaming response in a :class:`TextStream`.

    Args:
        response: the open streaming response (e.g. ``api_response.http_response`` of openai's
            ``with_streaming_response``); the stream closes it.
        chat: True for chat completion chunks, False for text completion chunks.
        on_close: called once when the response is closed.
    """
    return TextStream(response, chat=chat, on_close=on_close)


async def open_async_text_stream(
    response: httpx.Response, *, chat: bool, on_close: Callable[[], None] | None = None
) -> AsyncTextStream:
    """Wraps an open async streaming response in an :class:`AsyncTextStream`.

    Args:
        response: the open async streaming response; the stream closes it.
        chat: True for chat completion chunks, False for text completion chunks.
        on_close: called once when the response is closed.
    """
    gen = _aiter_text(response, chat, _Finish(response, on_close))
    await gen.__anext__()
    return AsyncTextStream(response, gen)
