"""The connection pools of nCompass's LangChain models: one per API URL, shared by every model of it.

LangChain code makes a model per chain, per request, per test; a pool each would leave its sockets to
the garbage collector (as langchain-openai's cached default clients avoid too). Timeouts are per request
(the ``NCompass`` clients' own), so the pools carry none.

An async connection belongs to the event loop that opened it, so the async pool is one per loop
(``_PerLoopTransport``): a script that calls ``asyncio.run`` twice, or a test suite with a loop per
test, gets a fresh pool in each loop, and each loop's pool is closed when that loop shuts down.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import weakref
from collections.abc import AsyncIterator

import sniffio
from openai._constants import DEFAULT_CONNECTION_LIMITS

from .._compat import httpx

__all__ = ["shared_http_clients"]


@functools.lru_cache(maxsize=16)
def shared_http_clients(base_url: str) -> tuple[httpx.Client, httpx.AsyncClient]:
    """The sync client and the async client every LangChain model of ``base_url`` sends with."""
    sync = httpx.Client(limits=DEFAULT_CONNECTION_LIMITS, follow_redirects=True)
    atexit.register(sync.close)
    return sync, httpx.AsyncClient(transport=_PerLoopTransport(), follow_redirects=True)


class _PerLoopTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = (
            weakref.WeakKeyDictionary()
        )
        self._other: httpx.AsyncHTTPTransport | None = None  # trio: one pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await (await self._pool()).handle_async_request(request)

    async def _pool(self) -> httpx.AsyncHTTPTransport:
        if sniffio.current_async_library() != "asyncio":
            self._other = self._other or httpx.AsyncHTTPTransport(limits=DEFAULT_CONNECTION_LIMITS)
            return self._other
        loop = asyncio.get_running_loop()
        entry = self._pools.get(loop)
        if entry is None:
            entry = self._pools[loop] = await _LoopPool.open()
        return entry.transport

    async def aclose(self) -> None:
        entry = self._pools.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.transport.aclose()


class _LoopPool:
    """A pool, and an async generator held open in its loop whose ``finally`` closes the pool.

    ``asyncio.run`` and ``asyncio.Runner`` finalize the loop's open async generators before closing it
    (``loop.shutdown_asyncgens()``): the pool's sockets are closed there, in their own loop, instead of
    being left to the garbage collector once the loop is gone.
    """

    def __init__(self, transport: httpx.AsyncHTTPTransport, closer: AsyncIterator[None]) -> None:
        self.transport = transport
        self._closer = closer  # kept alive: the loop holds its async generators weakly

    @classmethod
    async def open(cls) -> _LoopPool:
        transport = httpx.AsyncHTTPTransport(limits=DEFAULT_CONNECTION_LIMITS)

        async def closer() -> AsyncIterator[None]:
            try:
                yield
            finally:
                await transport.aclose()

        agen = closer()
        await agen.__anext__()
        return cls(transport, agen)
