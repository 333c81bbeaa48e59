"""The gateway's HTTP side: one aiohttp session over the replica pool, retries, and upstream errors.

- A request that fails before its first byte (unreachable replica, a 5xx) is retried once on another
  replica; an upstream's 4xx is the tenant's answer (a 400 with its message), a 429 or 503 keeps its
  ``Retry-After``, anything else is a 502 ``upstream_error`` (``api/_errors.py``).
- The upstream key is only ever in the session's headers: it is never logged, and :meth:`scrub` cuts it
  out of every upstream message passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from ...._sse import loads
from ..._exceptions import ModelNotRunning, UpstreamError
from ..._settings import ServerSettings
from ._replicas import Replica, ReplicaPool

__all__ = ["HTTP_ERRORS", "UpstreamClient"]

_CONNECT_TIMEOUT = 10.0
_JSON = {"Content-Type": "application/json"}
HTTP_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
"""What a failed upstream request raises: aiohttp's errors (its read timeouts are also TimeoutError)."""


class UpstreamClient:
    """Sends requests to the healthy replicas of the upstream pool.

    Args:
        settings: the server's settings (``upstream``, ``upstream_api_key``, ``upstream_timeout``,
            ``upstream_answer_timeout``, ``health_interval``).
    """

    def __init__(self, settings: ServerSettings) -> None:
        key = settings.upstream_api_key
        self._secret = key or None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        # aiohttp, not httpx: its C parser reads a streamed chunk with about a quarter of the CPU, and a
        # gateway shares its machine's cores with what it forwards to. Made on the loop, at the first use.
        self._session: aiohttp.ClientSession | None = None
        self.pool = ReplicaPool(settings.upstream, settings.health_interval)
        self.timeout = settings.upstream_timeout
        # A whole answer's one read: its own bound (the default sock_read bounds each read of a stream).
        self.answer_timeout = settings.upstream_answer_timeout
        self._whole = aiohttp.ClientTimeout(
            total=None, sock_connect=_CONNECT_TIMEOUT, sock_read=self.answer_timeout
        )

    @property
    def http(self) -> aiohttp.ClientSession:
        """The session (made on the loop the gateway serves from, at its first use)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=_CONNECT_TIMEOUT, sock_read=self.timeout
                ),
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            )
            self.pool.client = self._session
        return self._session

    async def close(self) -> None:
        await self.pool.close()
        if self._session is not None:
            await self._session.close()

    async def open(
        self, path: str, body: dict[str, Any], streamed: bool
    ) -> tuple[Replica, aiohttp.ClientResponse]:
        """The upstream's 200; a failure before its first byte is retried once elsewhere."""
        tried: list[Replica] = []
        last: UpstreamError | None = None
        for _ in range(2):
            replica = self.pool.pick(exclude=tried)
            if replica is None:
                break
            tried.append(replica)
            replica.outstanding += 1
            try:
                response = await self.http.post(
                    replica.base_url + path,
                    data=orjson.dumps(body),
                    headers=_JSON,
                    **({} if streamed else {"timeout": self._whole}),
                )
            except HTTP_ERRORS as exc:
                replica.outstanding -= 1
                if not streamed and isinstance(exc, aiohttp.SocketTimeoutError):
                    # Still generating: not the replica's fault, and another would start the answer over.
                    raise self.answer_late() from None
                self.pool.failed(replica, f"{type(exc).__name__} on {path}")
                if isinstance(exc, asyncio.TimeoutError):
                    last = UpstreamError(f"The upstream did not answer within {self.waits(streamed)}; retry.")
                else:
                    last = UpstreamError(f"The upstream could not be reached ({type(exc).__name__}); retry.")
                continue
            if response.status == 200:
                return replica, response
            try:
                error = self._refusal(path, response.status, await response.read(), response.headers)
            except HTTP_ERRORS:
                error = self._refusal(path, response.status, b"", response.headers)
            finally:
                response.release()
                replica.outstanding -= 1
            if response.status >= 500 and response.status != 503:
                last = error  # maybe this replica's trouble: once more on another
                continue
            raise error
        if last is not None:
            raise last
        raise ModelNotRunning("starting", retry_after=self.pool.interval, error=self.not_ready_reason())

    def not_ready_reason(self) -> str:
        """Why no replica can answer now."""
        return f"no upstream is healthy ({self.scrub(self.pool.why_down())})"

    async def first_model(self) -> str:
        """The first model the upstream lists at ``GET /models``."""
        replica = self.pool.pick()
        if replica is not None:
            with contextlib.suppress(*HTTP_ERRORS, ValueError, KeyError, IndexError, TypeError):
                async with self.http.get(replica.base_url + "/models") as answer:
                    name = loads(await answer.read())["data"][0]["id"]
                if isinstance(name, str) and name:
                    return name
        raise RuntimeError("The upstream lists no model at GET /models: name it with --upstream-model.")

    def _refusal(self, path: str, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamError:
        message, param = f"HTTP {status}", None
        with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
            error = json.loads(raw)["error"]
            message = str(error.get("message") or message) if isinstance(error, dict) else str(error)
            found = error.get("param") if isinstance(error, dict) else None
            param = found if isinstance(found, str) else None
        if status in (401, 403):
            text = (
                f"The upstream refused this server's own key ({status}): the operator must fix "
                "--upstream-api-key. Your request was not the problem."
            )
        elif status == 404 and param is None:
            text = (
                f"The upstream has no {path} route (404: {self.scrub(message)}), though this server is set "
                "up to send it there: the operator must check --upstream and --upstream-supports."
            )
        else:
            text = f"The upstream answered {status}: {self.scrub(message)}"
        return UpstreamError(text, status=status, retry_after=headers.get("retry-after"), param=param)

    def failure(self, error: Any, what: str) -> UpstreamError:
        """The error of an upstream's answer or event that is an ``error`` object, its message scrubbed."""
        message = error.get("message") if isinstance(error, dict) else error
        return UpstreamError(f"The upstream {what}: {self.scrub(str(message))}")

    def answer_late(self) -> UpstreamError:
        return UpstreamError(f"The upstream's answer did not come within {self.waits(False)}.")

    def waits(self, streamed: bool) -> str:
        """How long a read waits, and the flag that sets it."""
        if streamed:
            return f"{self.timeout:g} s (--upstream-timeout)"
        return f"{self.answer_timeout:g} s (--upstream-answer-timeout)"

    def scrub(self, text: str) -> str:
        """``text`` without the upstream key (an upstream may quote the key it was sent)."""
        return text.replace(self._secret, "***") if self._secret else text
