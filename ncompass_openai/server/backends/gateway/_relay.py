"""The relay of one upstream answer: read to its end into the stream's sink, whatever happens.

A streamed answer is read event by event (``[DONE]`` ends it, or every choice reaching the request's
token limit, which closes the upstream request); a whole one at once. The relay always
ends the sink with END or one error: a stream cut mid-way, or without an event for ``--upstream-timeout``
seconds (comments do not count), ends with the protocol's in-stream error event, never a silent
truncation, never a hang. Closing the
stream (the client went away) cancels the relay, which closes the upstream request and so stops its
generation there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp

from ...._sse import SSEParser, loads
from ..._exceptions import ModelUnavailableError, UpstreamError
from ...runtime._bridge import END, Sink
from ._reading import Reading, take_choice, usage_of

if TYPE_CHECKING:
    from ._client import UpstreamClient
    from ._replicas import Replica
    from ._responses import ResponseEvents

__all__ = ["relay"]

logger = logging.getLogger("ncompass_openai.server")


async def relay(
    client: UpstreamClient,
    replica: Replica,
    response: aiohttp.ClientResponse,
    read: Reading,
    *,
    streamed: bool,
    events: ResponseEvents | None,
    loaded: Callable[[], bool],
) -> None:
    """Read ``response`` into ``read``, then END, or the error that ended it, into its sink.

    ``events``: the reader of a Responses API stream; ``loaded()``: False once the deployment stopped.
    """
    sink: Sink = read.sink
    try:
        if streamed:
            await _stream(client, response, read, events)
        else:
            await _whole(client, response, read)
        if read.cut:
            response.close()  # every choice ended at the token limit: the upstream stops generating
        else:
            response.release()  # read to its end: the connection can serve another request
        sink.push(END)
    except UpstreamError as exc:
        sink.push(exc)
    except asyncio.TimeoutError:
        if streamed:
            message = f"The upstream sent no event for {client.waits(True)}; the answer is incomplete."
            sink.push(UpstreamError(message))
        else:
            sink.push(client.answer_late())
    except aiohttp.ClientError as exc:
        client.pool.failed(replica, f"{type(exc).__name__} mid-answer")
        sink.push(UpstreamError(f"The upstream broke off its answer ({type(exc).__name__}); retry."))
    except asyncio.CancelledError:
        if not loaded():  # unloaded: the deployment stopped under the stream
            sink.push(ModelUnavailableError("The model was stopped before this request finished."))
        raise
    except Exception:  # an answer of an unexpected shape: the stream still ends, never hangs
        logger.exception("Reading an upstream's answer failed")
        sink.push(UpstreamError("The upstream sent an answer this server cannot read; it is incomplete."))
    finally:
        response.close()  # a no-op once released; else it ends the upstream request


async def _stream(
    client: UpstreamClient, response: aiohttp.ClientResponse, read: Reading, events: ResponseEvents | None
) -> None:
    """A streamed answer: each upstream event into ``read``, up to ``[DONE]``.

    ``--upstream-timeout`` bounds the time between two events, not between two reads: an upstream that
    sends only SSE comments (``: ping``) keeps its socket busy and would otherwise hold the stream forever.
    """
    parser = SSEParser()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + client.timeout
    async for raw in response.content.iter_any():
        found = parser.feed(raw)
        if found:
            deadline = loop.time() + client.timeout
        elif loop.time() > deadline:
            raise asyncio.TimeoutError
        for data in found:
            if _event(client, data, read, events) or (read.cut and read.complete):
                return
    for data in parser.close():
        if _event(client, data, read, events):
            return
    raise UpstreamError("The upstream ended the stream before it was complete; retry the request.")


async def _whole(client: UpstreamClient, response: aiohttp.ClientResponse, read: Reading) -> None:
    """An answer that is not streamed: each of its choices becomes the events of a stream's chunks."""
    try:
        answer = loads(await response.read())
    except ValueError:
        raise UpstreamError("The upstream's answer is not JSON.") from None
    if isinstance(answer, dict) and "error" in answer:
        raise client.failure(answer["error"], "failed")
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise UpstreamError("The upstream's answer has no `choices` list.")
    read.usage(usage_of(answer.get("usage")))
    for choice in answer["choices"]:
        take_choice(choice, read, whole=True)


def _event(client: UpstreamClient, data: bytes, read: Reading, events: ResponseEvents | None) -> bool:
    """One upstream event into ``read``; True at ``[DONE]`` (or a Responses stream's last event)."""
    if data == b"[DONE]":
        return True
    try:
        event = loads(data)
    except ValueError:
        raise UpstreamError(
            "The upstream sent an event that is not JSON; the answer is incomplete."
        ) from None
    if not isinstance(event, dict):
        raise UpstreamError("The upstream sent an event that is not a JSON object.")
    if "error" in event:
        raise client.failure(event["error"], "failed mid-stream")
    if events is not None:
        try:
            return events.feed(event, read)
        except UpstreamError as exc:
            raise UpstreamError(client.scrub(exc.message)) from None
    read.usage(usage_of(event.get("usage")))
    for choice in event.get("choices") or ():
        take_choice(choice, read, whole=False)
    return False
