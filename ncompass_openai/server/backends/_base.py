"""The one seam between serving and where answers come from: :class:`Backend`.

Serving does the same thing for every backend, in one order::

    start = await backend.prepare_chat(req)     # the backend's own checks and planning: 400s, no queueing
    await admit(state, tenant)                  # the deployment is running; the request is counted
    stream = await start(tenant.id)             # queued here, or sent upstream: the answer's events
    async for event in stream: ...              # GenerationEvent: text, tool-call deltas, finish, logprobs

Two backends implement it: the local one (``backends/local``: the runtime, its engines, grammars and the
tool format) and the gateway (``backends/gateway``: OpenAI-compatible upstream servers). Only
:func:`~ncompass_openai.server.backends.make_backend` knows which one runs; the deployment manager drives
either through the lifecycle half of this class.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol._responses import ResponseRequest
from ..protocol._schemas import ChatCompletionRequest, CompletionRequest
from ..runtime._bridge import GenerationStream

__all__ = ["Backend", "Start"]

Start = Callable[[str], Awaitable[GenerationStream]]
"""``await start(tenant_id)``: a prepared request queued or sent; its events.

Raises :class:`QueueFullError` (429), :class:`ModelUnavailableError` (the model is down: 503),
:class:`InvalidRequest` (400), :class:`UpstreamError`, :class:`ModelNotRunning`; nothing is queued then.
"""


class Backend(abc.ABC):
    """Where answers come from: its model's lifecycle, and one ``prepare_*`` per API surface."""

    max_queue_per_key: int
    start_waits: bool = False
    """``start`` may wait long (a gateway's whole answer comes with its first byte): serving watches the
    client meanwhile, and cancels the start if it hangs up."""

    # ------------------------------------------------------------------ lifecycle
    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """The model name the server reports."""

    @property
    @abc.abstractmethod
    def loaded(self) -> bool:
        """Whether the model can be asked (weights in memory, upstreams started)."""

    @property
    def ready(self) -> bool:
        """Whether a request could be answered now (an upstream pool may have no healthy replica)."""
        return self.loaded

    @property
    def not_ready_reason(self) -> str | None:
        """Why a request could not be answered now, for the 503 (``None``: no reason beyond the state)."""
        return None

    @property
    @abc.abstractmethod
    def engine_name(self) -> str:
        """The engine's name, as ``--engine`` names it (``llama``, ``synthetic``, ``openai``)."""

    def accepts_model(self, model: str) -> bool:
        """Whether a request's ``model`` names this backend's model."""
        return model == self.model_id

    def parallel_tool_calls_default(self, chat_template: str | None = None) -> bool:
        """``parallel_tool_calls`` when a request leaves it out (OpenAI's default: true)."""
        return True

    @property
    def lifecycle_refusal(self) -> str | None:
        """Why ``POST /v1/deployment/start|stop`` cannot act here; ``None`` when they can."""
        return None

    @abc.abstractmethod
    async def load(self, tenant_id: str | None = None) -> None:
        """Bring the model up (may take minutes; the event loop stays free); ``tenant_id``: whose start."""

    @abc.abstractmethod
    async def unload(self, tenant_id: str | None = None) -> None:
        """Fail every request in flight with :class:`ModelUnavailableError`, then bring the model down."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Unload and free everything."""

    @abc.abstractmethod
    def inflight(self, tenant: str) -> int:
        """Requests of ``tenant`` queued or running."""

    @abc.abstractmethod
    def requests_by_tenant(self) -> dict[str, tuple[int, int]]:
        """Each tenant's requests generating and waiting: ``{tenant: (running, queued)}``."""

    def upstreams(self) -> list[tuple[str, bool, float | None, int]]:
        """Each upstream replica's ``(base URL, healthy, last probe seconds, requests in flight)``."""
        return []

    # ------------------------------------------------------------------ answers
    @abc.abstractmethod
    async def prepare_completion(self, req: CompletionRequest) -> Start:
        """Check and plan a completion (a list prompt is one batch; ``n`` choices per prompt)."""

    @abc.abstractmethod
    async def prepare_chat(self, req: ChatCompletionRequest) -> Start:
        """Check and plan a chat completion (formats and tools included)."""

    @abc.abstractmethod
    async def prepare_response(self, req: ResponseRequest, conversation: list[dict[str, Any]]) -> Start:
        """Check and plan a Responses API answer (``conversation``: the whole one, as chat messages)."""
