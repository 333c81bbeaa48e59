"""The nCompass 0.0.x methods, mixed into NCompass / AsyncNCompass (placeholder; being written)."""

from __future__ import annotations

__all__ = ["AsyncLegacyMixin", "SyncLegacyMixin"]


class SyncLegacyMixin:
    """0.0.x methods of :class:`ncompass_openai.NCompass`."""


class AsyncLegacyMixin:
    """0.0.x methods of :class:`ncompass_openai.AsyncNCompass`."""
