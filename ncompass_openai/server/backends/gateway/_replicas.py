"""The gateway's upstream replicas: least-outstanding-requests balancing and health checks.

Each replica is one base URL (``http://host:port/v1``). :meth:`ReplicaPool.pick` hands out the healthy
replica with the fewest requests in flight (ties: the one picked longest ago), skipping those a request
already failed on. A replica a request could not reach leaves the rotation at once; the health loop
probes every replica without requests in flight each ``interval`` seconds, and takes one back when it
answers: ``GET /health`` at the
server's root (vLLM, llama.cpp's ``llama-server``, SGLang, nCompass), else ``GET <base>/models`` for a
server without one (llama-cpp-python's, Ollama's).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

__all__ = ["Replica", "ReplicaPool"]

logger = logging.getLogger("ncompass_openai.server")

_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
_API_PREFIX = re.compile(r"/v\d+$")
_order = itertools.count()


@dataclass(eq=False)
class Replica:
    """One upstream server and what the gateway knows of it."""

    base_url: str  # ends in its API prefix, e.g. http://10.0.0.5:8000/v1
    healthy: bool = False
    outstanding: int = 0  # requests in flight
    latency: float | None = None  # seconds of the last health probe
    last_error: str | None = None
    picked: int = field(default_factory=lambda: next(_order))
    _probe: str | None = None  # the URL that answered its last probe

    @property
    def root(self) -> str:
        """The server's root (``/health`` lives there): the base URL without its ``/v1``."""
        return _API_PREFIX.sub("", self.base_url)


class ReplicaPool:
    """The replicas of one model, probed by a background task between :meth:`start` and :meth:`close`.

    Args:
        base_urls: each replica's base URL.
        interval: seconds between two probes of each replica.

    ``client`` is the HTTP session the probes use (its headers carry the upstream key; never logged),
    set before :meth:`start`.
    """

    client: aiohttp.ClientSession

    def __init__(self, base_urls: Sequence[str], interval: float) -> None:
        self.replicas = [Replica(url) for url in base_urls]
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # -- choosing ---------------------------------------------------------------------------------

    def pick(self, exclude: Sequence[Replica] = ()) -> Replica | None:
        """The healthy replica with the fewest requests in flight, not in ``exclude``; ``None`` if none."""
        candidates = [r for r in self.replicas if r.healthy and r not in exclude]
        if not candidates:
            return None
        best = min(candidates, key=lambda r: (r.outstanding, r.picked))
        best.picked = next(_order)
        return best

    @property
    def any_healthy(self) -> bool:
        return any(r.healthy for r in self.replicas)

    def why_down(self) -> str:
        """Each replica and its last error (for a message; keys not yet scrubbed)."""
        return "; ".join(f"{r.base_url}: {r.last_error}" for r in self.replicas)

    def failed(self, replica: Replica, reason: str) -> None:
        """A request could not reach ``replica``: out of the rotation until a probe answers."""
        if replica.healthy:
            logger.warning("Upstream %s left the rotation: %s", replica.base_url, reason)
        replica.healthy = False
        replica.last_error = reason

    # -- probing ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._probe_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for replica in self.replicas:
            replica.healthy = False

    async def wait_healthy(self, timeout: float) -> bool:
        """Wait until a replica is healthy (probing now); False after ``timeout`` seconds."""
        self.start()
        deadline = time.monotonic() + timeout
        while not self.any_healthy:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def probe_all(self) -> None:
        # A healthy replica answering requests now is not probed: its requests tell how it is, and some
        # servers end the stream in progress at any new request (llama-cpp-python's, by default).
        idle = [r for r in self.replicas if not (r.healthy and r.outstanding)]
        await asyncio.gather(*(self._probe_one(r) for r in idle))
        self._changed.set()

    async def _probe_forever(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception:  # a probe never ends the loop
                logger.exception("Probing the upstreams failed; trying again")
            await asyncio.sleep(self.interval)

    async def _probe_one(self, replica: Replica) -> None:
        started = time.monotonic()
        urls = (
            [replica._probe] if replica._probe else [replica.root + "/health", replica.base_url + "/models"]
        )
        reason = "no answer"
        for url in urls:
            try:
                async with self.client.get(url, timeout=_PROBE_TIMEOUT) as answer:
                    status = answer.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                reason = f"{type(exc).__name__} on {url}"
                break
            if status == 200:
                if not replica.healthy:
                    logger.info("Upstream %s is healthy", replica.base_url)
                replica.healthy, replica._probe, replica.last_error = True, url, None
                replica.latency = time.monotonic() - started
                return
            reason = f"{url} answered {status}"
        replica._probe = None  # the next probe tries both again
        self.failed(replica, reason)
