"""``ncompass batch run``: a JSONL job through one time-billed session, with a progress bar.

Exit codes: 0 every request answered; 1 some failed for good (they are in the errors file); 2 a bad input
line (nothing sent, no session started); 130 interrupted by Ctrl-C or ``SIGTERM`` (the session is stopped
first, and the same command resumes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import FLAG, client_of, command_group, error_line, fail, handle_errors
from ._output import format_duration, print_json, stderr_console

if TYPE_CHECKING:
    from ..batch import BatchProgress, BatchSummary, ProgressReporter
    from ..types import Deployment

__all__ = ["batch_app"]

batch_app = command_group(
    "batch",
    "Batch jobs: OpenAI Batch API JSONL through one time-billed session at full speed, resumable.",
)

_LINE_EVERY = 10.0  # seconds between two plain progress lines (stderr not a terminal)


def _rate(done: int, elapsed: float) -> float:
    return done / elapsed if elapsed > 0 else 0.0


def _reporter(json_output: bool) -> ProgressReporter:
    from ..batch import ProgressReporter

    class Quiet(ProgressReporter):
        pass

    class Lines(ProgressReporter):
        """Plain periodic lines, for logs (stderr is not a terminal)."""

        def __init__(self) -> None:
            self._last = 0.0

        def start(self, total: int | None, resumed: int) -> None:
            resumed_text = f", {resumed} answered by an earlier run" if resumed else ""
            sys.stderr.write(f"batch: {total if total is not None else '?'} requests{resumed_text}\n")

        def waiting(self, deployment: Deployment) -> None:
            now = time.monotonic()
            if now - self._last >= _LINE_EVERY:
                self._last = now
                sys.stderr.write(f"batch: waiting for the model ({deployment.state})\n")

        def update(self, progress: BatchProgress) -> None:
            now = time.monotonic()
            if now - self._last >= _LINE_EVERY:
                self._last = now
                sys.stderr.write(_line(progress) + "\n")
                sys.stderr.flush()

    class Bar(ProgressReporter):
        """Rich's progress bar on stderr: done/total, requests/s, tokens/s, ETA, billed seconds."""

        def __init__(self) -> None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rates]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[billed]}"),
                console=stderr_console(),
                transient=False,
            )
            self.task: Any = None
            self.status: Any = None

        def waiting(self, deployment: Deployment) -> None:
            if self.status is None:
                self.status = stderr_console().status("Waiting for the model", spinner="dots")
                self.status.start()
            self.status.update(f"Waiting for the model ({deployment.state})")

        def start(self, total: int | None, resumed: int) -> None:
            if self.status is not None:
                self.status.stop()
            self.progress.start()
            self.task = self.progress.add_task("batch", total=total, completed=0, rates="", billed="")

        def update(self, progress: BatchProgress) -> None:
            if self.task is None:
                return
            elapsed = progress.elapsed
            requests, tokens = _rate(progress.done, elapsed), _rate(progress.completion_tokens, elapsed)
            rates = f"{requests:.1f} req/s {tokens:.0f} tok/s x{progress.concurrency}"
            if progress.failed:
                rates += f" {progress.failed} failed"
            billed = (
                f"billed {format_duration(progress.billed_seconds)}"
                if progress.billed_seconds is not None
                else ""
            )
            self.progress.update(
                self.task,
                completed=progress.done + progress.failed + progress.skipped,
                rates=rates,
                billed=billed,
            )

        def finish(self, summary: BatchSummary) -> None:
            if self.status is not None:
                self.status.stop()
            if self.task is not None:  # the last answers came after the last refresh
                done = summary.succeeded + summary.failed + summary.skipped
                self.progress.update(self.task, completed=done)
            self.progress.stop()

    if json_output:
        return Quiet()
    if sys.stderr.isatty():
        return Bar()
    return Lines()


def _line(progress: BatchProgress) -> str:
    total = progress.total if progress.total is not None else "?"
    done = progress.done + progress.failed + progress.skipped
    requests, tokens = (
        _rate(progress.done, progress.elapsed),
        _rate(progress.completion_tokens, progress.elapsed),
    )
    text = (
        f"batch: {done}/{total} done, {progress.failed} failed, {requests:.1f} req/s, {tokens:.0f} tok/s, "
        f"{progress.concurrency} in flight"
    )
    if progress.billed_seconds is not None:
        text += f", billed {format_duration(progress.billed_seconds)}"
    return text


def _describe(summary: BatchSummary) -> str:
    parts = [
        f"{summary.succeeded} answered",
        f"{summary.failed} failed",
    ]
    if summary.skipped:
        parts.append(f"{summary.skipped} answered by an earlier run")
    text = (
        f"Batch {summary.job_id}: {', '.join(parts)} in {format_duration(summary.wall_seconds)} "
        f"({summary.requests_per_second:.1f} req/s, {summary.tokens_per_second:.0f} tok/s)."
    )
    if summary.billed_seconds is not None:
        text += f" Session {summary.session_id} billed {format_duration(summary.billed_seconds)}."
    text += f"\nResults: {summary.output}"
    if summary.failed:
        text += f"\nFailed requests: {summary.errors} (run the same command again to retry them)"
    if summary.interrupted:
        text += "\nInterrupted: run the same command again to resume."
    return text


@batch_app.command("run")
@handle_errors
def run(
    ctx: typer.Context,
    input: Annotated[
        Path,
        typer.Argument(
            help="OpenAI Batch API JSONL: one {custom_id, method, url, body} per line.", show_default=False
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Output JSONL (OpenAI's batch output format); resumed if it exists."
        ),
    ],
    errors: Annotated[
        Path | None,
        typer.Option(help="Errors JSONL (default: <output stem>.errors.jsonl).", show_default=False),
    ] = None,
    concurrency: Annotated[
        str,
        typer.Option(help="Requests in flight: auto (find the deployment's knee) or a number."),
    ] = "auto",
    no_session: Annotated[
        bool,
        typer.Option(
            "--no-session", metavar=FLAG, help="Run without a session (a plain OpenAI-compatible server)."
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", metavar=FLAG, help="Print only the summary, as JSON on stdout.")
    ] = False,
) -> None:
    """Run a JSONL job through one session: the model kept saturated, billing stopped at the end."""
    from .._exceptions import LifecycleAPIUnavailableError
    from ..batch import BatchInputError, run_batch_sync
    from ..batch._concurrency import make_concurrency

    try:
        make_concurrency(concurrency)
    except ValueError as exc:
        raise fail(str(exc), code=2) from None
    if not input.is_file():
        raise fail(f"{input}: no such file.", code=2)
    reporter = _reporter(json_output)
    try:
        with client_of(ctx) as client:
            summary = run_batch_sync(
                client,
                input,
                output=output,
                errors=errors,
                concurrency=concurrency,
                session=not no_session,
                reporter=reporter,
                handle_signals=True,
            )
    except BatchInputError as exc:
        raise fail(f"{input}: {error_line(exc)} (nothing was sent)", code=2) from None
    except LifecycleAPIUnavailableError as exc:
        hint = "For a plain OpenAI-compatible server, run it with --no-session."
        raise fail(f"{error_line(exc)} {hint}") from None
    if json_output:
        print_json(summary.to_dict())
    else:
        stderr_console().print(_describe(summary), highlight=False, markup=False)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(1)
