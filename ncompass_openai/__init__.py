"""ncompass-openai: the openai client for nCompass, with sessions, deployments and bookings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._client import AsyncNCompass, NCompass
    from ._exceptions import (
        BaseURLError,
        DeploymentFailedError,
        DeploymentTimeoutError,
        LifecycleAPIUnavailableError,
        MissingAPIKeyError,
        MissingDependencyError,
        ModelNotRunningError,
        NCompassError,
        ServerUnreachableError,
        SessionError,
        StreamError,
        TruncatedStreamError,
    )
    from ._oloc import nCompass, nCompassOLOC
    from ._settings import DEFAULT_BASE_URL, NCompassSettings
    from ._status import ModelNotRunningAPIError
    from ._streaming import AsyncTextStream, TextStream
    from .batch import BatchInputError
    from .types import Booking, Deployment, Session, SessionUsage

# Public names are imported on first use (PEP 562), so that `import ncompass_openai.cli` (the
# `ncompass` command) does not pay for importing openai (~0.3 s) before it knows what it will run.
# A new public name goes in three places: the TYPE_CHECKING block, this table and __all__.
_LAZY: dict[str, str] = {
    "DEFAULT_BASE_URL": "._settings",
    "AsyncNCompass": "._client",
    "BaseURLError": "._exceptions",
    "BatchInputError": ".batch",
    "NCompass": "._client",
    "Booking": ".types",
    "Deployment": ".types",
    "DeploymentFailedError": "._exceptions",
    "DeploymentTimeoutError": "._exceptions",
    "LifecycleAPIUnavailableError": "._exceptions",
    "MissingAPIKeyError": "._exceptions",
    "MissingDependencyError": "._exceptions",
    "ModelNotRunningAPIError": "._status",
    "ModelNotRunningError": "._exceptions",
    "NCompassError": "._exceptions",
    "NCompassSettings": "._settings",
    "Session": ".types",
    "ServerUnreachableError": "._exceptions",
    "SessionError": "._exceptions",
    "SessionUsage": ".types",
    "StreamError": "._exceptions",
    "TruncatedStreamError": "._exceptions",
    "AsyncTextStream": "._streaming",
    "TextStream": "._streaming",
    "nCompass": "._oloc",
    "nCompassOLOC": "._oloc",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncNCompass",
    "AsyncTextStream",
    "BaseURLError",
    "BatchInputError",
    "Booking",
    "Deployment",
    "DeploymentFailedError",
    "DeploymentTimeoutError",
    "LifecycleAPIUnavailableError",
    "MissingAPIKeyError",
    "MissingDependencyError",
    "ModelNotRunningAPIError",
    "ModelNotRunningError",
    "NCompass",
    "NCompassError",
    "NCompassSettings",
    "ServerUnreachableError",
    "Session",
    "SessionError",
    "SessionUsage",
    "StreamError",
    "TextStream",
    "TruncatedStreamError",
    "__version__",
    "nCompass",
    "nCompassOLOC",
]
