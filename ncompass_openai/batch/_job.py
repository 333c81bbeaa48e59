"""One running batch job: its requests sent at the concurrency level, retried, and recorded.

Retries are the job's own, so that a ``429`` reaches the concurrency level: ``429`` and
``503 model_starting`` wait their ``Retry-After``; ``408``, ``409``, other ``5xx`` and connection errors
back off exponentially; after ``max_retries`` of those, or at once on any other ``4xx``, the request has
failed for good and goes to the errors file, and the job goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _headers
from .._compat import httpx
from ..resources.sessions import note_billing
from ._concurrency import Concurrency
from ._input import BatchRequest
from ._progress import BatchProgress, ProgressReporter
from ._records import JobFiles, dumps, idempotency_key, loads

if TYPE_CHECKING:
    from .._client import AsyncNCompass
    from ..types import Session

__all__ = ["Job"]

_OVERLOAD_RETRIES = 50  # 429s are capacity, not failure: many are waited out before giving up
_MAX_BACKOFF = 8.0
_REPORT_EVERY = 0.1  # seconds between two progress updates
SESSION_LEASE = 120.0
"""The idle lease of a job's session: a job killed with ``SIGKILL`` stops billing this long after."""


@dataclass
class _Counts:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Limiter:
    """The dispatcher's gate: at most ``concurrency.level`` in flight, nothing sent while paused."""

    def __init__(self, concurrency: Concurrency) -> None:
        self.concurrency = concurrency
        self.in_flight = 0
        self.paused_until = 0.0
        self.stopping = False
        self._wake = asyncio.Event()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            wait = self.paused_until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif self.in_flight >= self.concurrency.level:
                self._wake.clear()
                await self._wake.wait()
            else:
                self.in_flight += 1
                return

    def release(self) -> None:
        self.in_flight -= 1
        self._wake.set()

    def stop(self) -> None:
        """Lets the dispatcher through whatever the count: the job is stopping."""
        self.stopping = True
        self._wake.set()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, asyncio.get_running_loop().time() + seconds)


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get(_headers.RETRY_AFTER)
    with contextlib.suppress(TypeError, ValueError):
        return min(max(float(value), 0.0), 120.0)  # type: ignore[arg-type]
    return default


def _error_field(body: object, name: str) -> str | None:
    """``error.<name>`` of an error answer in OpenAI's shape, if it is a string."""
    error = body.get("error") if isinstance(body, dict) else None
    value = error.get(name) if isinstance(error, dict) else None
    return value if isinstance(value, str) else None


def _usage(body: object) -> tuple[int, int]:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (prompt if isinstance(prompt, int) else 0), (completion if isinstance(completion, int) else 0)


class Job:
    def __init__(
        self,
        client: AsyncNCompass,
        files: JobFiles,
        concurrency: Concurrency,
        *,
        max_retries: int,
        reporter: ProgressReporter,
        total: int | None,
        http: Any,
    ) -> None:
        self.client = client
        self.files = files
        self.concurrency = concurrency
        self.limiter = _Limiter(concurrency)
        self.max_retries = max_retries
        self.reporter = reporter
        self.total = total
        self.counts = _Counts()
        self.session: Session | None = None
        self.started = time.monotonic()
        self._last_report = 0.0
        self._model: str | None = None
        base = str(client.base_url).rstrip("/")
        self._base = base[: -len("/v1")] if base.endswith("/v1") else base
        self._http: Any = http
        self._timeout = client.timeout
        headers = {**client.default_headers, **client.auth_headers, "Content-Type": "application/json"}
        self._headers = {name: value for name, value in headers.items() if isinstance(value, str)}

    # -- the session and its billed time

    def billed_so_far(self) -> float | None:
        if self.session is None:
            return None
        return max(0.0, time.time() - self.session.started_at)

    def progress(self) -> BatchProgress:
        counts = self.counts
        return BatchProgress(
            total=self.total,
            done=counts.done,
            failed=counts.failed,
            skipped=counts.skipped,
            elapsed=time.monotonic() - self.started,
            completion_tokens=counts.completion_tokens,
            billed_seconds=self.billed_so_far(),
            concurrency=self.concurrency.level,
        )

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report >= _REPORT_EVERY:
            self._last_report = now
            self.reporter.update(self.progress())

    async def heartbeat(self) -> None:
        """Renews the session's lease while the job runs, however long one generation takes."""
        assert self.session is not None
        while True:
            await asyncio.sleep(SESSION_LEASE / 4)
            with contextlib.suppress(Exception):  # a missed beat is retried; requests renew it too
                await self.client.sessions.heartbeat(self.session.id)

    # -- sending

    async def run(self, requests: Iterator[BatchRequest]) -> None:
        """Sends every request not answered yet; an error that is not a request's own (a bug, the key's
        model that cannot be looked up, a full disk) stops the job and is raised."""
        tasks: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None and not failure:
                failure.append(task.exception())  # type: ignore[arg-type]
                self.limiter.stop()

        try:
            for request in requests:
                if failure:
                    break
                if request.custom_id in self.files.answered:
                    self.counts.skipped += 1
                    continue
                await self.limiter.acquire()
                if failure:
                    break
                task = asyncio.ensure_future(self._one(request))
                tasks.add(task)
                task.add_done_callback(done)
            while tasks and not failure:
                await asyncio.wait(set(tasks), return_when=asyncio.FIRST_EXCEPTION)
            if failure:
                raise failure[0]
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks))

    async def _body(self, request: BatchRequest) -> bytes:
        body = request.body
        if "model" not in body:
            if self._model is None:
                self._model = await self.client.resolve_model()
            body = {**body, "model": self._model}
        return dumps(body)

    async def _one(self, request: BatchRequest) -> None:
        try:
            await self._send(request)
        finally:
            self.limiter.release()
            self._report()

    async def _send(self, request: BatchRequest) -> None:
        payload = await self._body(request)
        canonical = json.dumps(request.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        key = idempotency_key(self.files.job_id, request.custom_id, request.url, canonical.encode())
        headers = {**self._headers, _headers.IDEMPOTENCY_KEY: key}
        url = self._base + request.url
        failures = overloads = 0
        while True:
            sent = time.monotonic()
            try:
                response = await self._http.post(url, content=payload, headers=headers, timeout=self._timeout)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                failures += 1
                if failures > self.max_retries:
                    error = {"code": "connection_error", "message": f"{type(exc).__name__}: {exc}"}
                    self._failed(request, None, None, error)
                    return
                await asyncio.sleep(self._backoff(failures))
                continue
            self._note_cap(response)
            status = response.status_code
            if status == 200:
                self._succeeded(request, response, time.monotonic() - sent)
                return
            body = self._json(response)
            code = _error_field(body, "code")
            if status == 429:
                overloads += 1
                self.concurrency.on_overload(self.limiter.in_flight)
                wait = _retry_after(response, 1.0)
                self.limiter.pause(wait)
                if overloads <= _OVERLOAD_RETRIES:
                    await asyncio.sleep(wait)
                    continue
            elif (status in (408, 409) or status >= 500) and code != "model_stopped":
                failures += 1
                if failures <= self.max_retries:
                    default = self._backoff(failures)
                    await asyncio.sleep(_retry_after(response, default) if status == 503 else default)
                    continue
            message = _error_field(body, "message") or f"HTTP {status}"
            self._failed(request, response, body, {"code": code or f"http_{status}", "message": message})
            return

    def _backoff(self, failures: int) -> float:
        delay: float = min(_MAX_BACKOFF, 0.5 * 2.0 ** (failures - 1))
        return delay * (0.75 + random.random() / 2)

    def _note_cap(self, response: httpx.Response) -> None:
        value = response.headers.get(_headers.MAX_IN_FLIGHT)
        if value is not None and value.isdigit():
            self.concurrency.set_cap(int(value))

    @staticmethod
    def _json(response: httpx.Response) -> object:
        try:
            return loads(response.content)
        except ValueError:
            return response.text

    def _record(
        self, request: BatchRequest, response: httpx.Response | None, body: object, error: object
    ) -> bytes:
        answer = None
        if response is not None:
            request_id = response.headers.get("x-request-id")
            if request_id is None and isinstance(body, dict) and isinstance(body.get("id"), str):
                request_id = body["id"]
            answer = {"status_code": response.status_code, "request_id": request_id, "body": body}
        record = {
            "id": f"batch_req_{uuid.uuid4().hex}",
            "custom_id": request.custom_id,
            "response": answer,
            "error": error,
        }
        return dumps(record)

    def _succeeded(self, request: BatchRequest, response: httpx.Response, latency: float) -> None:
        body = self._json(response)
        prompt, completion = _usage(body)
        if self.session is None:
            note_billing(self.client, response)  # an implicit session: the billing guard stops it at exit
        self.files.write_result(self._record(request, response, body, None))
        counts = self.counts
        counts.done += 1
        counts.prompt_tokens += prompt
        counts.completion_tokens += completion
        self.concurrency.on_success(time.monotonic(), latency, completion)

    def _failed(
        self, request: BatchRequest, response: httpx.Response | None, body: object, error: dict[str, str]
    ) -> None:
        self.files.write_error(self._record(request, response, body, error))
        self.counts.failed += 1
