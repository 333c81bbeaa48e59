"""ncompass-openai: the openai client for nCompass, with sessions, deployments and bookings."""

from __future__ import annotations

from ._exceptions import (
    DeploymentFailedError,
    DeploymentTimeoutError,
    MissingAPIKeyError,
    MissingDependencyError,
    ModelNotRunningError,
    NCompassError,
    SessionError,
    StreamError,
    TruncatedStreamError,
)
from ._settings import DEFAULT_BASE_URL, NCompassSettings
from ._version import __version__
from .types import Booking, Deployment, Session, SessionUsage

__all__ = [
    "DEFAULT_BASE_URL",
    "Booking",
    "Deployment",
    "DeploymentFailedError",
    "DeploymentTimeoutError",
    "MissingAPIKeyError",
    "MissingDependencyError",
    "ModelNotRunningError",
    "NCompassError",
    "NCompassSettings",
    "Session",
    "SessionError",
    "SessionUsage",
    "StreamError",
    "TruncatedStreamError",
    "__version__",
]
