"""The local backend: an engine run here, with grammars for formats and the generic tool-call format."""

from __future__ import annotations

from ._backend import LocalBackend

__all__ = ["LocalBackend"]
