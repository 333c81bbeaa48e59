"""Constrained decoding inside an engine: llguidance token masks, one matcher per sequence.

The routes turn ``response_format`` and ``tools`` into an llguidance grammar (``server/_grammar.py``);
the engine gets it as :attr:`SamplingParams.grammar`. Before each sampled token the sequence's matcher
computes which tokens may come next, the engine sets every other token's logit to ``-inf``, and the
sampled token is fed back to the matcher. Each sequence of a batch has its own matcher, so constrained
and unconstrained sequences decode side by side.

A grammar is compiled once per engine (the first :meth:`Grammars.constraint` for it) and each sequence
gets a copy of the compiled matcher, so a repeated schema costs nothing to compile.

One guard narrows the grammar further: after :data:`MAX_DIGIT_RUN` digits in a row, digit tokens are
masked too whenever the grammar allows anything else. JSON numbers have no length limit, and a small model
sampling the fraction of a ``number`` can go on until the token limit. The guard only ever narrows what
the grammar allows (every answer still validates): it rules out runs of more than 16 digits, beyond
float64's precision, in numbers and strings alike.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["Grammars", "SequenceConstraint"]

_CACHED_GRAMMARS = 64
MAX_DIGIT_RUN = 16
_DIGITS = frozenset(b"0123456789")


class _Vocabulary:
    """What the guard needs to know of each token: its bytes, and whether it is digits only."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.size = len(pieces)
        self.digits = np.array([bool(p) and _DIGITS.issuperset(p) for p in pieces], dtype=bool)


class SequenceConstraint:
    """The grammar state of one sequence: masks logits, follows sampled tokens."""

    def __init__(self, matcher: Any, vocabulary: _Vocabulary) -> None:
        self._matcher = matcher
        self._vocab = vocabulary
        self._mask = np.zeros((vocabulary.size + 31) // 32, dtype=np.int32)
        self._digit_run = 0

    def mask(self, logits: Any) -> None:
        """Set the logit of every token the grammar forbids next to ``-inf`` (``logits``: a float pointer)."""
        self._matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        allowed = np.unpackbits(self._mask.view(np.uint8), bitorder="little", count=self._vocab.size).astype(
            bool
        )
        if self._digit_run >= MAX_DIGIT_RUN:
            narrower = allowed & ~self._vocab.digits
            if narrower.any():
                allowed = narrower
        view = np.ctypeslib.as_array(logits, shape=(self._vocab.size,))
        view[~allowed] = -np.inf

    def accept(self, token: int) -> None:
        """Follow the sampled token (always one :meth:`mask` allowed)."""
        if not self._matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused a token it allowed: {self._matcher.get_error()}")
        piece = self._vocab.pieces[token]
        trailing = len(piece) - len(piece.rstrip(b"0123456789"))
        self._digit_run = self._digit_run + trailing if trailing == len(piece) and piece else trailing

    @property
    def done(self) -> bool:
        """Whether the grammar is complete and allows nothing more (the sequence should end here)."""
        return bool(self._matcher.is_stopped())


class Grammars:
    """Compiled grammars for one tokenizer, most recently used kept (the engine's worker thread only).

    Args:
        make_tokenizer: builds the ``llguidance.LLTokenizer`` (about half a second for a 49k vocabulary),
            called once, at the first constrained sequence.
        pieces: returns the bytes of every token id (as many as the logits have), called with the former.
    """

    def __init__(self, make_tokenizer: Any, pieces: Any) -> None:
        self._make_tokenizer = make_tokenizer
        self._tokenizer: Any = None
        self._pieces = pieces
        self._vocab: _Vocabulary | None = None
        self._compiled: OrderedDict[str, Any] = OrderedDict()

    def constraint(self, grammar: str) -> SequenceConstraint:
        """A fresh constraint for one sequence (the grammar compiled now if it is new)."""
        import llguidance

        if self._tokenizer is None or self._vocab is None:
            self._tokenizer = self._make_tokenizer()
            self._vocab = _Vocabulary(self._pieces())
        matcher = self._compiled.get(grammar)
        if matcher is None:
            matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
            if matcher.is_error():  # the route validated it: only resource limits get here
                raise RuntimeError(f"The grammar could not be compiled: {matcher.get_error()}")
            self._compiled[grammar] = matcher
            if len(self._compiled) > _CACHED_GRAMMARS:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(grammar)
        return SequenceConstraint(matcher.deep_copy(), self._vocab)
