"""0.0.x's sampling defaults: one place for every method, one-liner and CLI command that keeps them.

A module of its own, importing nothing, so that ``ncompass --help`` reads them without importing openai.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_TEMPERATURE", "DEFAULT_TOP_P"]

DEFAULT_MAX_TOKENS = 300
DEFAULT_TEMPERATURE = 0.5
DEFAULT_TOP_P = 0.9
