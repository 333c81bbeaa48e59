"""What a batch job tells as it runs and when it ends: its progress, its summary, and who hears them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..types import Deployment

__all__ = ["BatchProgress", "BatchSummary", "ProgressReporter"]


@dataclass(frozen=True)
class BatchProgress:
    """Where a running job is; handed to a [`ProgressReporter`][ncompass_openai.batch.ProgressReporter]
    about ten times a second."""

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
