"""The engine interface: the only thing a new backend (vLLM, a remote engine) has to implement.

Routes never talk to an engine directly: they go through the runtime (``server/_runtime.py``), which
owns the request queue, stop strings, cancellation and token accounting. An engine only loads and
unloads weights, tokenizes, and produces tokens for a batch of prompts.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Engine", "EngineToken", "SamplingParams"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request, already validated by the route."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # vLLM's convention: -1 (or 0) disables it
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class EngineToken:
    """One generated token of sequence ``index`` (its place in the batch)."""

    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None


class Engine(abc.ABC):
    """A model backend. Not required to be thread safe: the runtime calls it from one worker thread."""

    name: str
    model_id: str

    @abc.abstractmethod
    def load(self) -> None:
        """Load the weights (blocking; may take minutes). Raises on failure."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Free the weights."""

    @property
    @abc.abstractmethod
    def loaded(self) -> bool:
        """Whether the weights are in memory."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for this model."""

    @abc.abstractmethod
    def chat_template(self) -> str | None:
        """The model's own Jinja chat template, if it has one."""

    @abc.abstractmethod
    def generate(
        self, prompts: Sequence[str], params: SamplingParams, cancelled: threading.Event
    ) -> Iterator[EngineToken]:
        """Yield tokens for every prompt, decoded together as one batch where the engine can.

        Each sequence ends with a token carrying its ``finish_reason``. The generator stops soon after
        ``cancelled`` is set, and when it is closed.
        """
