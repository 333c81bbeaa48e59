"""Batch jobs: big request sets through one time-billed session at full speed, resumable, with progress.

``client.run_batch("requests.jsonl", output="results.jsonl")`` (or ``await`` it on ``AsyncNCompass``;
``ncompass batch run`` on the command line) reads OpenAI's Batch API JSONL and writes OpenAI's batch
output JSONL. openai's own ``client.batches`` (OpenAI's server-side Batch API) is left untouched.
"""

from __future__ import annotations

from ._concurrency import AutoConcurrency, Concurrency, FixedConcurrency
from ._input import URLS, BatchInputError, BatchRequest, BatchSource
from ._progress import BatchProgress, BatchSummary, ProgressReporter
from ._runner import BatchOptions, run_batch, run_batch_sync

__all__ = [
    "URLS",
    "AutoConcurrency",
    "BatchInputError",
    "BatchOptions",
    "BatchProgress",
    "BatchRequest",
    "BatchSource",
    "BatchSummary",
    "Concurrency",
    "FixedConcurrency",
    "ProgressReporter",
    "run_batch",
    "run_batch_sync",
]
