"""LangChain models served by nCompass: ``ChatNCompass`` (chat) and ``NCompassLLM`` (text completions).

Needs the ``langchain`` extra: ``pip install 'ncompass-openai[langchain]'``.
"""

from __future__ import annotations

from .._exceptions import MissingDependencyError

try:
    import langchain_core  # noqa: F401
    import langchain_openai  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingDependencyError(
        "nCompass's LangChain models", "pip install 'ncompass-openai[langchain]'"
    ) from exc

from ._chat_models import ChatNCompass
from ._llms import NCompassLLM

__all__ = ["ChatNCompass", "NCompassLLM"]
