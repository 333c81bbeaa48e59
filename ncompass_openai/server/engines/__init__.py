"""Model engines behind the inference runtime: ``llama`` (llama-cpp-python) and ``synthetic``.

Build one with :func:`ncompass_openai.server._runtime.make_engine`; a new backend subclasses
:class:`Engine`. The llama engine is imported only when asked for, so this package loads without
llama-cpp-python.
"""

from __future__ import annotations

from ._base import Engine, EngineToken, GenerationControl, SamplingParams, SequenceRequest

__all__ = ["Engine", "EngineToken", "GenerationControl", "SamplingParams", "SequenceRequest"]
