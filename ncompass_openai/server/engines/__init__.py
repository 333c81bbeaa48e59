"""Model engines behind the inference runtime: ``llama`` (llama-cpp-python) and ``synthetic``.

Build one with :func:`make_engine`; a new engine subclasses
:class:`Engine`. The llama engine is imported only when asked for, so this package loads without
llama-cpp-python.
"""

from __future__ import annotations

from ._base import Engine, EngineToken, GenerationControl, SamplingParams, SequenceRequest

__all__ = ["Engine", "EngineToken", "GenerationControl", "SamplingParams", "SequenceRequest", "make_engine"]


def make_engine(
    name: str,
    model_path: str | None = None,
    threads: int | None = None,
    *,
    max_batch: int = 8,
    token_rate: float | None = None,
) -> Engine:
    """Build an engine by name.

    Args:
        name: ``"llama"`` (llama-cpp-python; SmolLM2-135M-Instruct unless ``model_path``) or
            ``"synthetic"`` (deterministic fake tokens, no model).
        model_path: a GGUF file for the llama engine.
        threads: CPU threads for the llama engine (default: all cores).
        max_batch: sequences decoded together.
        token_rate: the synthetic engine's tokens per second per sequence (default: unpaced).

    Raises:
        ValueError: unknown engine name.
    """
    if name == "synthetic":
        from .synthetic import SyntheticEngine

        return SyntheticEngine(max_batch=max_batch, delay=1.0 / token_rate if token_rate else 0.0)
    if name == "llama":
        from .llama import LlamaEngine

        return LlamaEngine(model_path=model_path, threads=threads, max_batch=max_batch)
    raise ValueError(f"Unknown engine {name!r}: use 'llama' or 'synthetic'.")
