"""Where answers come from: the :class:`Backend` seam, and the one factory that picks the backend."""

from __future__ import annotations

from .._settings import ServerSettings
from ..engines import Engine, make_engine
from ._base import Backend, Start

__all__ = ["Backend", "Start", "make_backend"]


def make_backend(settings: ServerSettings, engine: Engine | None = None) -> Backend:
    """The backend ``settings.engine`` names: the gateway for ``openai``, else an engine run here.

    Args:
        settings: the server's settings.
        engine: an engine instance to serve instead of building ``settings.engine`` (tests tune the
            synthetic engine with it).
    """
    if settings.engine == "openai" and engine is None:
        from .gateway import GatewayBackend  # aiohttp: only when the gateway runs

        return GatewayBackend(settings)
    from ..runtime._runtime import InferenceRuntime
    from .local import LocalBackend

    built = engine or make_engine(
        settings.engine,
        settings.model,
        settings.threads,
        max_batch=settings.max_batch,
        token_rate=settings.synthetic_token_rate,
    )
    return LocalBackend(InferenceRuntime(built, max_queue_per_key=settings.max_queue_per_key))
