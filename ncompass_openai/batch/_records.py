"""A batch job's files: the output and errors JSONL (OpenAI's batch output format) and the job id beside them.

Output line: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}``;
an errors line has the same shape, with the server's error answer in ``response`` (``null`` when none
came, a connection failure) and ``error: {"code", "message"}``. Every line is written whole and flushed
before the request counts as done, so a killed run loses only its requests in flight.

Resuming: running a job again over the same output skips every ``custom_id`` the output holds, and
runs again those of the errors file (which it starts afresh). The job id file (``<output>.job.json``)
keeps the id each request's ``Idempotency-Key`` is derived from, so a resumed job's retries replay the
answers the server still holds, while a new job (no output file yet) gets a new id and runs afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["JobFiles", "dumps", "idempotency_key", "loads"]

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dev dependency, so this branch runs without it only
    orjson = None  # type: ignore[assignment]


def dumps(value: object) -> bytes:
    """Compact JSON bytes (orjson when installed: the ``speedups`` extra)."""
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes) -> Any:
    """Parsed JSON (orjson when installed)."""
    return orjson.loads(data) if orjson is not None else json.loads(data)


def idempotency_key(job_id: str, custom_id: str, url: str, body: bytes) -> str:
    """The request's ``Idempotency-Key``: the same for a job's retries and resumes, new for a new job."""
    digest = hashlib.sha256(b"\0".join((job_id.encode(), custom_id.encode(), url.encode(), body)))
    return f"batch-{digest.hexdigest()[:48]}"


def _answered(path: Path) -> set[str]:
    """The ``custom_id``s an output file holds; a line cut short by a kill is truncated away."""
    done: set[str] = set()
    good = 0
    with path.open("rb") as file:
        for raw in file:
            if not raw.endswith(b"\n"):
                break  # the last write of a killed run
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                    done.add(record["custom_id"])
            good += len(raw)
    if good != path.stat().st_size:
        with path.open("r+b") as file:
            file.truncate(good)
    return done


class JobFiles:
    """The output, errors and job-id files of one job, opened for appending results.

    Args:
        output: The output JSONL; if it exists the job resumes (its ``custom_id``s are skipped).
        errors: The errors JSONL. Default: beside the output, ``<stem>.errors.jsonl``.
    """

    def __init__(self, output: str | os.PathLike[str], errors: str | os.PathLike[str] | None = None) -> None:
        self.output = Path(output)
        self.errors = (
            Path(errors) if errors is not None else self.output.with_name(f"{self.output.stem}.errors.jsonl")
        )
        if self.errors.resolve() == self.output.resolve():
            raise ValueError("The errors file must differ from the output file.")
        self.job_file = self.output.with_name(f"{self.output.name}.job.json")
        self.job_id = ""
        self.answered: set[str] = set()
        self._out: IO[bytes] | None = None
        self._err: IO[bytes] | None = None

    def open(self) -> JobFiles:
        """Reads what an earlier run left (answers, job id), then opens the files for this run."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.errors.parent.mkdir(parents=True, exist_ok=True)
        job_id = None
        if self.output.exists():
            self.answered = _answered(self.output)
            job_id = self._read_job_id()
        if job_id is None:
            job_id = f"job_{uuid.uuid4().hex}"
            self._write_job_id(job_id)
        self.job_id = job_id
        self._out = self.output.open("ab")
        self._err = self.errors.open("wb")
        return self

    def _read_job_id(self) -> str | None:
        with contextlib.suppress(OSError, ValueError, TypeError):
            data: Any = json.loads(self.job_file.read_text())
            if isinstance(data.get("job_id"), str):
                return str(data["job_id"])
        return None

    def _write_job_id(self, job_id: str) -> None:
        temporary = self.job_file.with_name(self.job_file.name + ".tmp")
        temporary.write_text(json.dumps({"job_id": job_id, "output": self.output.name}) + "\n")
        os.replace(temporary, self.job_file)

    def write_result(self, line: bytes) -> None:
        """Appends one output line (without its newline) and flushes it."""
        assert self._out is not None, "JobFiles.open() first"
        self._out.write(line + b"\n")
        self._out.flush()

    def write_error(self, line: bytes) -> None:
        """Appends one errors line (without its newline) and flushes it."""
        assert self._err is not None, "JobFiles.open() first"
        self._err.write(line + b"\n")
        self._err.flush()

    def close(self) -> None:
        """Syncs both files to disk and closes them."""
        for file in (self._out, self._err):
            if file is not None and not file.closed:
                file.flush()
                with contextlib.suppress(OSError):
                    os.fsync(file.fileno())
                file.close()

    def __enter__(self) -> JobFiles:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
