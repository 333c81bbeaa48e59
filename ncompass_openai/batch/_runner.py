"""The batch runner: a job's requests through one time-billed session, the deployment kept saturated.

Order of work: check the whole input (a bad line fails here, before anything is sent); open the job's
files (resume); bring the model up (``ensure_running``: a cold start is waited for before the session
opens, so it is not billed); start the session (it replaces an implicit one); send with the level of
requests in flight that ``_concurrency`` decides; stop the session the moment the last result is written,
or on error, cancellation, Ctrl-C or ``SIGTERM`` (``handle_signals``).

Requests go out as bytes (on openai's aiohttp transport when it is installed, see ``_transport``) and
answers are written as the server sent them: no pydantic model is built per request, which is most of
a plain openai loop's CPU. The sending, retries and records of a running job are ``_job.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from typing_extensions import Required, Unpack

from ._concurrency import make_concurrency
from ._input import BatchRequest, BatchSource, check_file, from_items, read_file
from ._job import SESSION_LEASE, Job
from ._progress import BatchSummary, ProgressReporter
from ._records import JobFiles

if TYPE_CHECKING:
    from .._client import AsyncNCompass, NCompass

__all__ = ["BatchOptions", "run_batch", "run_batch_sync"]


class BatchOptions(TypedDict, total=False):
    """A batch job's options: ``run_batch`` on both clients, and the functions behind them, take these."""

    output: Required[str | os.PathLike[str]]
    """OpenAI's batch output JSONL, one line per answer, appended in completion order."""
    errors: str | os.PathLike[str] | None
    """Requests that failed for good, in the same shape (default: ``<output stem>.errors.jsonl``)."""
    concurrency: int | str
    """``"auto"`` (the default: climb to the deployment's throughput knee, within the server's per-key
    limit) or a fixed number of requests in flight."""
    session: bool
    """Run inside a session of its own (the default); ``False`` for a plain OpenAI-compatible server."""
    defaults: Mapping[str, object] | None
    """Body fields for prompts and message lists (``max_tokens``, ``temperature``...)."""
    max_retries: int | None
    """Retries of a request after a 408, 409, 5xx or connection error (default: the client's); 429s and
    ``503 model_starting`` wait their ``Retry-After`` instead."""
    wait_timeout: float | None
    """Seconds to wait for the model to come up (default 1800); ``None`` waits without limit."""
    reporter: ProgressReporter | None
    """A [`ProgressReporter`][ncompass_openai.batch.ProgressReporter] told of progress."""


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
    handle_signals: bool = False,
    **options: Unpack[BatchOptions],
) -> BatchSummary:
    """Runs a batch job; see :meth:`ncompass_openai.AsyncNCompass.run_batch` for the arguments.

    ``handle_signals``: Ctrl-C and ``SIGTERM`` stop the job (its session stopped, its summary returned).
    """
    level = make_concurrency(options.get("concurrency", "auto"))
    max_retries = options.get("max_retries")
    if max_retries is None:
        max_retries = client.max_retries
    reporter = options.get("reporter") or ProgressReporter()
    wait_timeout = options.get("wait_timeout", 1800.0)
    session = options.get("session", True)
    # A bad line raises here: nothing sent yet.
    requests, total = _requests(source, options.get("defaults"))
    files = JobFiles(options["output"], options.get("errors")).open()
    http, own_http = _transport(client)
    job = Job(client, files, level, max_retries=max_retries, reporter=reporter, total=total, http=http)
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


def run_batch_sync(
    client: NCompass, source: BatchSource, *, handle_signals: bool = False, **options: Unpack[BatchOptions]
) -> BatchSummary:
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
            return await run_batch(twin, source, handle_signals=handle_signals, **options)

    return asyncio.run(main())
