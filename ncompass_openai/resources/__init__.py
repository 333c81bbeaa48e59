"""nCompass's resources on top of openai's: sessions, deployment (with bookings), and completions and
responses with ``model`` optional."""

from __future__ import annotations

from ._common import RequestOptions
from ._completions import (
    AsyncChat,
    AsyncChatCompletions,
    AsyncCompletions,
    Chat,
    ChatCompletions,
    Completions,
)
from ._responses import AsyncResponses, Responses
from .bookings import AsyncBookings, Bookings
from .deployment import AsyncDeploymentResource, DeploymentResource
from .sessions import AsyncSessions, Sessions

__all__ = [
    "AsyncBookings",
    "AsyncChat",
    "AsyncChatCompletions",
    "AsyncCompletions",
    "AsyncDeploymentResource",
    "AsyncResponses",
    "AsyncSessions",
    "Bookings",
    "Chat",
    "ChatCompletions",
    "Completions",
    "DeploymentResource",
    "RequestOptions",
    "Responses",
    "Sessions",
]
