"""The engine interface: the only thing a new backend (vLLM, a remote engine) has to implement.

Routes never talk to an engine directly: they go through the runtime (``server/_runtime.py``), which
owns the request queue, stop strings, cancellation and token accounting. An engine only loads and
unloads weights, tokenizes, and produces tokens for the sequences it is fed.

Generation is continuous batching: :meth:`Engine.generate` pulls new sequences from a ``take``
callback whenever it has free slots (at most :attr:`Engine.max_batch` sequences are decoded together)
and yields :class:`EngineToken` objects until no sequence is active and ``take`` has nothing more.
An engine that cannot batch sets ``max_batch = 1``; nothing else changes.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "Engine",
    "EngineToken",
    "GenerationControl",
    "SamplingParams",
    "SequenceRequest",
    "TokenLogprobs",
]

# ChatML, the format SmolLM2 and many small models are trained on: the fallback when a model ships no
# template of its own, and the synthetic engine's template.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one sequence, already validated by the route."""

    max_tokens: int = 16
    min_tokens: int = 0  # vLLM's: tokens generated before the end-of-sequence token may be
    presence_penalty: float = 0.0  # OpenAI's, over the generated tokens: minus this once a token appeared
    frequency_penalty: float = 0.0  # OpenAI's: minus this times the number of times a token appeared
    logit_bias: tuple[tuple[int, float], ...] = ()  # OpenAI's: (token id, bias added to its logit)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # vLLM's convention: -1 (or 0) disables it
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    # An llguidance grammar (``server/_grammar.py`` builds it from ``response_format`` or ``tools``): every
    # token is sampled from those the grammar allows, and the sequence ends once the grammar is complete.
    grammar: str | None = None
    # OpenAI's logprobs: None off; k >= 0 the sampled token's log probability and the k most likely tokens'
    # (of the model's own distribution: before temperature, penalties or a grammar reshape it, as vLLM's
    # default "raw" logprobs).
    logprobs: int | None = None


@dataclass(frozen=True)
class SequenceRequest:
    """One sequence to generate: ``id`` is unique within one :meth:`Engine.generate` call.

    ``cache_group``: sequences of one group may reuse each other's prompt cache (the runtime gives the
    tenant); ``None``: this sequence's cache is never shared.
    """

    id: int
    prompt: str
    params: SamplingParams
    cache_group: str | None = None


@dataclass(frozen=True)
class TokenLogprobs:
    """The sampled token's bytes and log probability, and the most likely tokens' (most likely first)."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclass(frozen=True)
class EngineToken:
    """One generated token of sequence ``id``.

    ``text`` is the newly complete text (never a broken multibyte character, so it may be empty while
    a character is incomplete). A sequence's last token carries its ``finish_reason``: ``"stop"`` for
    the end-of-sequence token (whose text is empty), ``"length"`` for the token that hit ``max_tokens``
    or the context size.
    """

    id: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: TokenLogprobs | None = None  # when the sequence asked for them (not for the end token)
    cached_tokens: int = 0  # on a sequence's first token: prompt tokens reused from the engine's cache


class GenerationControl:
    """Thread-safe switches the runtime flips while an engine generates.

    ``stop(id)`` ends one sequence (a stop string matched, its client went away); the engine drops it at
    its next step without yielding anything more for it. ``cancel()`` ends the whole call.
    """

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._stopped: set[int] = set()
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """End the whole generation call soon."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled.is_set()

    def stop(self, seq_id: int) -> None:
        """End sequence ``seq_id`` soon."""
        with self._lock:
            self._stopped.add(seq_id)

    def is_stopped(self, seq_id: int) -> bool:
        """Whether sequence ``seq_id`` (or the whole call) was ended by the runtime."""
        if self._cancelled.is_set():
            return True
        with self._lock:
            return seq_id in self._stopped

    def forget(self, seq_id: int) -> None:
        """Drop the record of a finished sequence (keeps long-running calls from growing)."""
        with self._lock:
            self._stopped.discard(seq_id)


TakeFn = Callable[[int], Sequence[SequenceRequest]]


class Engine(abc.ABC):
    """A model backend. Not required to be thread safe: the runtime calls it from one worker thread.

    Only :meth:`count_tokens` may be called from another thread while :meth:`generate` runs, so it
    must touch nothing but read-only tokenizer data.
    """

    name: str
    model_id: str
    max_batch: int = 1
    context_length: int = 2048  # per sequence: prompt tokens + max_tokens must fit
    vocab_size: int | None = None  # token ids are 0 .. vocab_size - 1 (None: no token ids, no logit_bias)
    supports_grammar: bool = False  # whether it honours SamplingParams.grammar (constrained decoding)
    supports_logprobs: bool = False  # whether it honours SamplingParams.logprobs

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
        """How many tokens ``text`` is for this model, as a prompt (special tokens parsed)."""

    @abc.abstractmethod
    def chat_template(self) -> str | None:
        """The model's own Jinja chat template, if it has one."""

    def special_tokens(self) -> dict[str, str]:
        """``bos_token`` / ``eos_token`` strings handed to chat templates."""
        return {"bos_token": "", "eos_token": ""}

    @abc.abstractmethod
    def generate(self, take: TakeFn, control: GenerationControl) -> Iterator[EngineToken]:
        """Yield tokens of every sequence fed by ``take``, decoded together where the engine can.

        Args:
            take: called with the number of free slots whenever the engine can admit sequences;
                returns at most that many new sequences (an empty list when none are waiting).
            control: sequences the runtime ended (``control.is_stopped(id)``) are dropped at the next
                step; after ``control.cancel()`` the generator returns soon.

        The generator returns once no sequence is active and ``take`` returns nothing.
        """
