"""A batch job's input: OpenAI's Batch API JSONL, or a Python iterable of prompts, message lists or lines.

A JSONL line is ``{"custom_id": str, "method": "POST", "url": "/v1/chat/completions", "body": {...}}``
(OpenAI's Batch API and vLLM's ``run_batch`` read the same). A file is read twice, a line at a time and
never whole: once to check every line (:func:`check_file`), before any request is sent or any session
starts, and once to run it (:func:`read_file`). A bad line is a :class:`BatchInputError` naming its line
number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._exceptions import NCompassError

__all__ = ["URLS", "BatchInputError", "BatchRequest", "BatchSource", "check_file", "from_items", "read_file"]

URLS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
"""The routes a batch line may name (``url``)."""

BatchSource = str | os.PathLike[str] | Iterable[object]
"""A JSONL file's path, or an iterable of prompts (``str``), message lists, or line-shaped dicts."""


class BatchInputError(NCompassError, ValueError):
    """A line (or item) of a batch's input is not a request; raised before anything is sent.

    Attributes:
        line: The 1-based line number (for a Python iterable: the 1-based item number).
    """

    def __init__(self, line: int, message: str, *, where: str = "line") -> None:
        self.line = line
        super().__init__(f"{where} {line}: {message}")


BatchInputError.__module__ = "ncompass_openai"  # as tracebacks show it: where users import it from


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a job: its ``custom_id``, route and body, and where it came from."""

    custom_id: str
    url: str
    body: dict[str, Any]
    line: int


def _parse(data: object, number: int, where: str) -> BatchRequest:
    if not isinstance(data, dict):
        raise BatchInputError(number, f"expected a JSON object, got {type(data).__name__}", where=where)
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        problem = "is missing" if custom_id is None else "must be a non-empty string"
        raise BatchInputError(number, f'"custom_id" {problem}', where=where)
    method = data.get("method", "POST")
    if method != "POST":
        raise BatchInputError(number, f'"method" must be "POST", got {method!r}', where=where)
    url = data.get("url")
    if url is None:
        raise BatchInputError(number, '"url" is missing', where=where)
    if url not in URLS:
        raise BatchInputError(number, f'unknown "url" {url!r}: use one of {", ".join(URLS)}', where=where)
    body = data.get("body")
    if body is None:
        raise BatchInputError(number, '"body" is missing', where=where)
    if not isinstance(body, dict):
        raise BatchInputError(number, f'"body" must be a JSON object, got {type(body).__name__}', where=where)
    if body.get("stream"):
        raise BatchInputError(number, '"body.stream" is not supported in a batch: leave it out', where=where)
    unknown = set(data) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise BatchInputError(number, f"unknown field(s) {', '.join(sorted(unknown))}", where=where)
    return BatchRequest(custom_id, url, body, number)


def _lines(path: str | os.PathLike[str]) -> Iterator[BatchRequest]:
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise BatchInputError(number, f"not JSON ({exc})") from None
            yield _parse(data, number, "line")


def check_file(path: str | os.PathLike[str]) -> int:
    """Checks every line of a JSONL file (and that no ``custom_id`` repeats); returns how many there are.

    Raises:
        BatchInputError: the first bad line, by number.
        OSError: the file cannot be read.
    """
    seen: set[str] = set()
    for request in _lines(path):
        if request.custom_id in seen:
            raise BatchInputError(request.line, f"custom_id {request.custom_id!r} repeats an earlier line")
        seen.add(request.custom_id)
    return len(seen)


def read_file(path: str | os.PathLike[str]) -> Iterator[BatchRequest]:
    """The requests of a JSONL file already checked by :func:`check_file`, one line at a time."""
    return _lines(path)


def from_items(
    items: Iterable[object], defaults: Mapping[str, object] | None = None
) -> Iterator[BatchRequest]:
    """Requests from Python values: a prompt (``str``, a completion), a message list (a chat), or a dict
    shaped like a JSONL line. ``defaults`` fill in the body fields of prompts and message lists
    (``max_tokens``, ``temperature``...); custom ids of those are ``request-<n>``, n from 1.

    Raises:
        BatchInputError: an item that is none of these, or a repeated ``custom_id`` (``item <n>``).
    """
    seen: set[str] = set()
    for number, item in enumerate(items, start=1):
        if isinstance(item, str):
            line: object = {
                "custom_id": f"request-{number}",
                "url": "/v1/completions",
                "body": {**(defaults or {}), "prompt": item},
            }
        elif isinstance(item, list):
            line = {
                "custom_id": f"request-{number}",
                "url": "/v1/chat/completions",
                "body": {**(defaults or {}), "messages": item},
            }
        elif isinstance(item, Mapping):
            line = dict(item)
        else:
            raise BatchInputError(
                number,
                f"expected a prompt (str), a message list or a batch line (dict), got {type(item).__name__}",
                where="item",
            )
        request = _parse(line, number, "item")
        if request.custom_id in seen:
            raise BatchInputError(
                number, f"custom_id {request.custom_id!r} repeats an earlier item", where="item"
            )
        seen.add(request.custom_id)
        yield request
