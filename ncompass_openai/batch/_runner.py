"""The batch runner: a job's requests through one time-billed session, the deployment kept saturated.

Order of work: check the whole input (a bad line fails here, before anything is sent); open the job's
files (resume); bring the model up (``ensure_running``: a cold start is waited for before the session
opens, so it is not billed); start the session (it replaces an implicit one); send with the level of
requests in flight that ``_concurrency`` decides; stop the session the moment the last result is written,
or on error, cancellation, Ctrl-C or ``SIGTERM`` (``handle_signals``).

Requests go out as bytes (on openai's aiohttp transport when it is installed, see ``_transport``) and
answers are written as the server sent them: no pydantic model is built per request, which is most of
a plain openai loop's CPU.
Retries are the runner's own, so that a ``429`` reaches the concurrency level: ``429`` and
``503 model_starting`` wait their ``Retry-After``; ``408``, ``409``, other ``5xx`` and connection errors
back off exponentially; after ``max_retries`` of those, or at once on any other ``4xx``, the request has
failed for good and goes to the errors file, and the job goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .. import _headers
from .._compat import httpx
from ..resources.sessions import note_billing
from ._concurrency import Concurrency, make_concurrency
from ._input import BatchRequest, BatchSource, check_file, from_items, read_file
from ._records import JobFiles, dumps, idempotency_key, loads

if TYPE_CHECKING:
    from .._client import AsyncNCompass, NCompass
    from ..types import Deployment, Session

__all__ = ["BatchProgress", "BatchSummary", "ProgressReporter", "run_batch", "run_batch_sync"]

_OVERLOAD_RETRIES = 50  # 429s are capacity, not failure: many are waited out before giving up
_MAX_BACKOFF = 8.0
_REPORT_EVERY = 0.1  # seconds between two progress updates
SESSION_LEASE = 120.0
"""The idle lease of a job's session: a job killed with ``SIGKILL`` stops billing this long after."""


@dataclass(frozen=True)
class BatchProgress:
    """Where a running job is; handed to a :class:`ProgressReporter` about ten times a second."""

    total: int | None
    done: int
    failed: int
    skipped: int
    elapsed: float
    completion_tokens: int
    billed_seconds: float | None
    concurrency: int


@dataclass(frozen=True)
class BatchSummary:
    """What a job did (this run; ``skipped`` were answered by an earlier run of the same job)."""

    job_id: str
    output: str
    errors: str
    total: int
    succeeded: int
    failed: int
    skipped: int
    interrupted: bool
    wall_seconds: float
    billed_seconds: float | None
    session_id: str | None
    session_stopped: bool
    prompt_tokens: int
    completion_tokens: int
    requests_per_second: float
    tokens_per_second: float
    concurrency: int

    @property
    def ok(self) -> bool:
        """Every request of the input has its answer in the output."""
        return self.failed == 0 and not self.interrupted

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values (what ``ncompass batch run --json`` prints)."""
        return {**asdict(self), "ok": self.ok}


class ProgressReporter:
    """Receives a job's progress; the CLI's bar and periodic lines are two of these."""

    def start(self, total: int | None, resumed: int) -> None:
        """The job begins sending (``resumed``: answers kept from an earlier run)."""

    def waiting(self, deployment: Deployment) -> None:
        """The model is not running yet; called with each status seen while waiting."""

    def update(self, progress: BatchProgress) -> None:
        """The job moved on."""

    def finish(self, summary: BatchSummary) -> None:
        """The job ended (its session is stopped by then)."""


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


def _requests(
    source: BatchSource, defaults: Mapping[str, object] | None
) -> tuple[Iterator[BatchRequest], int | None]:
    """The requests and how many there are; a file or a sequence is checked whole first."""
    if isinstance(source, (str, os.PathLike)):
        if defaults:
            raise ValueError("defaults= applies to prompts and message lists, not to a JSONL file's bodies.")
        total = check_file(source)
        return read_file(source), total
    if isinstance(source, (bytes, bytearray)):
        raise TypeError("A batch's input is a file path or an iterable of prompts, message lists or lines.")
    if isinstance(source, Sequence):
        checked = list(from_items(source, defaults))
        return iter(checked), len(checked)
    return from_items(source, defaults), None  # a one-shot iterable: each item is checked as it comes


class _Job:
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


def _transport(client: AsyncNCompass) -> tuple[Any, bool]:
    """The pool a job sends on, and whether the job made it (and closes it).

    openai's aiohttp transport (``openai[aiohttp]``: the ``aiohttp`` extra) takes about half the CPU per
    request of its default httpx one, so a job uses it when it is installed and the client kept openai's
    default pool; a pool the caller gave (``http_client=``: proxies, certificates) is always used as is.
    """
    import openai
    from openai._base_client import AsyncHttpxClientWrapper

    if type(client._client) is not AsyncHttpxClientWrapper:
        return client._client, False
    try:
        return openai.DefaultAioHttpClient(timeout=client.timeout), True
    except RuntimeError:  # openai[aiohttp] is not installed
        return client._client, False


@contextlib.contextmanager
def _signals_stop(task: asyncio.Task[Any]) -> Iterator[None]:
    """Ctrl-C and ``SIGTERM`` cancel the job's task (it then stops its session and writes its summary)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, task.cancel)
                installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def run_batch(
    client: AsyncNCompass,
    source: BatchSource,
    *,
    output: str | os.PathLike[str],
    errors: str | os.PathLike[str] | None = None,
    concurrency: int | str = "auto",
    session: bool = True,
    defaults: Mapping[str, object] | None = None,
    max_retries: int | None = None,
    wait_timeout: float | None = 1800.0,
    reporter: ProgressReporter | None = None,
    handle_signals: bool = False,
) -> BatchSummary:
    """Runs a batch job; see :meth:`ncompass_openai.AsyncNCompass.run_batch` for the arguments."""
    level = make_concurrency(concurrency)
    if max_retries is None:
        max_retries = client.max_retries
    reporter = reporter or ProgressReporter()
    requests, total = _requests(source, defaults)  # a bad line raises here: nothing sent yet
    files = JobFiles(output, errors).open()
    http, own_http = _transport(client)
    job = _Job(client, files, level, max_retries=max_retries, reporter=reporter, total=total, http=http)
    interrupted = owned = False
    error: BaseException | None = None
    try:
        if session:
            await client.deployment.ensure_running(timeout=wait_timeout, on_progress=reporter.waiting)
            job.session = await client.sessions.start(
                idle_timeout=SESSION_LEASE, metadata={"batch_job": files.job_id}
            )
            # The key's active session may be another's (then it is used, and left open) or this job's own,
            # left by a run that was killed (then it is adopted, and stopped at the end).
            owned = job.session.metadata.get("batch_job") == files.job_id
        job.started = time.monotonic()
        reporter.start(total, len(files.answered))
        work = asyncio.ensure_future(job.run(requests))
        heartbeat = asyncio.ensure_future(job.heartbeat()) if job.session is not None else None
        try:
            with _signals_stop(work) if handle_signals else contextlib.nullcontext():
                await asyncio.shield(work)
        except asyncio.CancelledError:
            interrupted = True
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            if not handle_signals:
                raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
    except BaseException as exc:
        error = exc
        raise
    finally:
        wall = time.monotonic() - job.started
        billed = None
        stopped = job.session
        if job.session is not None:
            with contextlib.suppress(Exception) if error is not None else contextlib.nullcontext():
                end = client.sessions.stop if owned else client.sessions.retrieve
                task = asyncio.ensure_future(end(job.session.id))
                stopped = await asyncio.shield(task)  # a cancelled job still stops its billing
                billed = stopped.billed_seconds
        files.close()
        if own_http:
            await asyncio.shield(asyncio.ensure_future(http.aclose()))
        counts = job.counts
        summary = BatchSummary(
            job_id=files.job_id,
            output=str(files.output),
            errors=str(files.errors),
            total=total if total is not None else counts.done + counts.failed + counts.skipped,
            succeeded=counts.done,
            failed=counts.failed,
            skipped=counts.skipped,
            interrupted=interrupted or error is not None,
            wall_seconds=wall,
            billed_seconds=billed,
            session_id=stopped.id if stopped is not None else None,
            session_stopped=owned,
            prompt_tokens=counts.prompt_tokens,
            completion_tokens=counts.completion_tokens,
            requests_per_second=counts.done / wall if wall > 0 else 0.0,
            tokens_per_second=counts.completion_tokens / wall if wall > 0 else 0.0,
            concurrency=level.level,
        )
        reporter.finish(summary)
    return summary


def run_batch_sync(client: NCompass, source: BatchSource, **kwargs: Any) -> BatchSummary:
    """:func:`run_batch` from synchronous code: an ``AsyncNCompass`` twin of ``client`` on its own loop."""
    from .._client import AsyncNCompass

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "NCompass.run_batch() was called inside a running event loop: use "
            "`await AsyncNCompass(...).run_batch(...)` there instead."
        )
    config = client._ncompass_config
    headers = {name: value for name, value in client._custom_headers.items() if isinstance(value, str)}

    async def main() -> BatchSummary:
        async with AsyncNCompass(
            api_key=client.api_key,
            base_url=client.base_url,
            model=client._model,
            timeout=client.timeout,
            max_retries=client.max_retries,
            idle_timeout=config.idle_timeout,
            stop_on_sigterm=config.stop_on_sigterm,
            default_headers=headers,
        ) as twin:
            return await run_batch(twin, source, **kwargs)

    return asyncio.run(main())
