"""Several upstream answers read as one stream: ``n`` and a list prompt in front of an upstream that
cannot batch them.

Not every OpenAI-compatible server answers ``n > 1`` or a list of prompts (llama-cpp-python's server
makes up an empty second choice for ``n: 2`` and fails a list prompt), so unless the upstreams are
declared ``vllm`` the gateway sends one request per choice (one prompt, ``n: 1``; with a ``seed``, choice
``j`` of a prompt gets ``seed + j``, as the local engines do). Each part's events are renumbered to its
choice's index, the parts' usages are summed (a prompt counted once whatever ``n``, as OpenAI counts
it), and the stream ends once every part has ended; the first error ends it at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...runtime._bridge import END, Sink
from ...runtime._events import GenerationEvent, Usage

__all__ = ["FanIn", "PartSink", "split_bodies"]


def split_bodies(
    body: dict[str, Any], prompts: list[Any] | None, n: int
) -> list[tuple[dict[str, Any], bool]]:
    """One body per choice, with whether it is its prompt's first (whose prompt tokens count).

    ``prompts``: a completions request's prompts (``None`` for chat, whose messages every part sends).
    """
    seed = body.get("seed")
    parts = []
    for prompt in prompts if prompts is not None else [None]:
        for j in range(n):
            part = {**body, "n": 1}
            if prompt is not None:
                part["prompt"] = prompt
            if seed is not None:
                part["seed"] = seed + j
            parts.append((part, j == 0))
    return parts


class FanIn:
    """The one sink several parts push into (see :meth:`part`).

    Args:
        sink: the stream's sink.
        parts: how many parts will end it.
    """

    def __init__(self, sink: Sink, parts: int) -> None:
        self._sink = sink
        self._parts = parts
        self._ended = 0
        self._failed = False
        self._usages: dict[int, tuple[Usage, bool]] = {}

    def part(self, index: int, counts_prompt: bool) -> PartSink:
        """The sink of the part answering choice ``index``; ``counts_prompt``: its prompt tokens count."""
        return PartSink(self, index, counts_prompt)

    def take(self, part: PartSink, item: Any) -> None:
        if self._failed:
            return
        if item is END:
            self._ended += 1
            if self._ended == self._parts:
                self._sink.push(END)
        elif isinstance(item, BaseException):
            self._failed = True
            self._sink.push(item)
        elif isinstance(item, Usage):
            self._usages[part.index] = (item, part.counts_prompt)
            usages = self._usages.values()
            self._sink.push(
                Usage(
                    sum(u.prompt_tokens for u, counts in usages if counts),
                    sum(u.completion_tokens for u, _ in usages),
                    sum(u.cached_tokens for u, counts in usages if counts),
                )
            )
        else:
            assert isinstance(item, GenerationEvent)
            self._sink.push(dataclasses.replace(item, index=part.index))


class PartSink(Sink):
    """What one part's reader and relay push into: passed on to its :class:`FanIn`, renumbered."""

    def __init__(self, fan: FanIn, index: int, counts_prompt: bool) -> None:  # no deque of its own
        self._fan = fan
        self.index = index
        self.counts_prompt = counts_prompt

    def push(self, item: Any) -> bool:
        self._fan.take(self, item)
        return True
