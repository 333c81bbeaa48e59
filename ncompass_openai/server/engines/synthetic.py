"""The synthetic engine: deterministic words produced as fast as the server can send them.

Like vLLM's dummy weights it exercises everything but the model: the queue, batching, stop strings,
streaming and accounting run exactly as with the llama engine. The output depends only on the prompt
and the seed (or on the prompt alone at ``temperature=0``), so tests can compare two runs.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from collections.abc import Iterator

from ._base import DEFAULT_CHAT_TEMPLATE, Engine, EngineToken, GenerationControl, SequenceRequest, TakeFn

__all__ = ["SyntheticEngine"]

# A few non-ASCII words so multibyte text flows through every path.
# fmt: off
_WORDS = (
    " the", " model", " answers", " quickly", " and", " tokens", " stream", " to", " every", " client",
    " café", " naïve", " 日本", " über", ",", ".", " a", " local", " server", " runs", " offline",
)
# fmt: on
_TOKEN_RE = re.compile(r"\s*\S+|\s+")


class SyntheticEngine(Engine):
    """Deterministic fake model with a whitespace tokenizer and a ChatML chat template.

    Args:
        model_id: the model name the server reports.
        max_batch: sequences generated side by side.
        delay: seconds per decoding step (0: as fast as possible), each step one token for every
            sequence: ``1 / delay`` tokens per second per sequence (``ncompass serve
            --synthetic-token-rate``); tests use it to make generation slow enough to observe queueing
            and cancellation, and paced upstreams stand in for real deployments.
        load_time: seconds :meth:`load` takes, to imitate reading weights.
    """

    name = "synthetic"

    def __init__(
        self,
        model_id: str = "synthetic",
        *,
        max_batch: int = 8,
        delay: float = 0.0,
        load_time: float = 0.0,
    ) -> None:
        self.model_id = model_id
        self.max_batch = max_batch
        self.context_length = 1 << 20  # no real context: long streams for load tests
        self.delay = delay
        self.load_time = load_time
        self._loaded = False

    def load(self) -> None:
        """Pretend to load weights."""
        if self.load_time:
            time.sleep(self.load_time)
        self._loaded = True

    def unload(self) -> None:
        """Pretend to free weights."""
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` ran."""
        return self._loaded

    def count_tokens(self, text: str) -> int:
        """One token per whitespace-led word."""
        return len(_TOKEN_RE.findall(text))

    def chat_template(self) -> str | None:
        """ChatML."""
        return DEFAULT_CHAT_TEMPLATE

    def special_tokens(self) -> dict[str, str]:
        """ChatML's end-of-turn doubles as end-of-sequence."""
        return {"bos_token": "", "eos_token": "<|im_end|>"}

    def generate(self, take: TakeFn, control: GenerationControl) -> Iterator[EngineToken]:
        """Round-robin one word per active sequence per step."""
        if not self._loaded:
            raise RuntimeError("The synthetic engine is not loaded.")
        active: dict[int, tuple[random.Random, int]] = {}  # id -> (rng, tokens left)
        step_at = time.monotonic()  # paced by deadlines: the time a step takes is not added to the delay
        while not control.cancelled:
            free = self.max_batch - len(active)
            if free > 0:
                for seq in take(free):
                    active[seq.id] = (_rng(seq), seq.params.max_tokens)
            if not active:
                return
            for seq_id in list(active):
                if control.is_stopped(seq_id):
                    del active[seq_id]
                    continue
                rng, left = active[seq_id]
                word = _WORDS[rng.randrange(len(_WORDS))]
                left -= 1
                if left <= 0:
                    del active[seq_id]
                    yield EngineToken(seq_id, word, "length")
                else:
                    active[seq_id] = (rng, left)
                    yield EngineToken(seq_id, word)
            if self.delay:
                step_at = max(step_at + self.delay, time.monotonic() - self.delay)
                time.sleep(max(0.0, step_at - time.monotonic()))


def _rng(seq: SequenceRequest) -> random.Random:
    params = seq.params
    if params.temperature == 0:
        salt = "greedy"
    elif params.seed is not None:
        salt = f"seed:{params.seed}"
    else:
        salt = os.urandom(8).hex()
    digest = hashlib.sha256(f"{salt}\0{seq.prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
