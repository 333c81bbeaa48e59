"""The gateway backend: whole requests forwarded to OpenAI-compatible upstream servers.

``ncompass serve --engine openai --upstream URL`` puts the nCompass protocol (tenants, sessions, billing,
idempotency, the deployment lifecycle, bookings) in front of servers that speak OpenAI's API (vLLM,
SGLang, llama.cpp's ``llama-server``, llama-cpp-python's server, Ollama, another nCompass server). Serving
is the same as for the local backend; only the source of a request's events differs: ``start`` sends the
request to a replica (``_client.py``) and a relay task (``_relay.py``) reads the upstream's chunks, or its
whole answer for a request that is not streamed, into the same typed events (``_reading.py``)::

    backend = GatewayBackend(settings)          # --upstream, --upstream-model, --upstream-api-key, ...
    await backend.load()                        # runs --start-command, waits for a healthy replica
    start = await backend.prepare_chat(req)     # the body, or the 400 of an undeclared feature
    stream = await start(tenant)                # after the upstream's 200
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from typing import TYPE_CHECKING, Any

from ..._exceptions import ModelUnavailableError, QueueFullError
from ..._settings import ServerSettings
from ...protocol._responses import ResponseRequest
from ...protocol._schemas import ChatCompletionRequest, CompletionRequest
from ...runtime._bridge import GenerationStream, LoopSink
from .._base import Backend, Start
from ._bodies import answer_checks, body_of
from ._client import UpstreamClient
from ._commands import run_command
from ._reading import Reading
from ._relay import relay
from ._replicas import ReplicaPool
from ._responses import ResponseEvents, response_body

if TYPE_CHECKING:
    from ._answer_check import AnswerCheck, CallsCheck

__all__ = ["GatewayBackend"]

logger = logging.getLogger("ncompass_openai.server")


class GatewayBackend(Backend):
    """Forwards requests to the replicas of one upstream model.

    Args:
        settings: the server's settings (``upstream``, ``upstream_model``, ``upstream_api_key``,
            ``served_model_name``, ``upstream_supports``, ``upstream_timeout``,
            ``upstream_answer_timeout``, ``health_interval``,
            ``start_command``, ``stop_command``, ``start_timeout``, ``max_queue_per_key``).
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.client = UpstreamClient(settings)
        self.supports = frozenset(settings.upstream_supports)
        self.max_queue_per_key = settings.max_queue_per_key
        self._upstream_model = settings.upstream_model
        self._served_name = settings.served_model_name
        self._start_command = settings.start_command
        self._stop_command = settings.stop_command
        self._start_timeout = settings.start_timeout
        self._loaded = False
        self._inflight: collections.Counter[str] = collections.Counter()
        self._relays: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def pool(self) -> ReplicaPool:
        """The upstream replicas."""
        return self.client.pool

    @property
    def model_id(self) -> str:
        return self._served_name or self._upstream_model or "upstream"

    @property
    def upstream_model(self) -> str:
        """The model name sent upstream."""
        return self._upstream_model or self.model_id

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def ready(self) -> bool:
        return self._loaded and self.pool.any_healthy

    @property
    def engine_name(self) -> str:
        return "openai"

    @property
    def lifecycle_refusal(self) -> str | None:
        if self._start_command and self._stop_command:
            return None
        return (
            "This server's upstreams are always on: nothing here can start or stop them. Give "
            "`ncompass serve --start-command CMD --stop-command CMD` (e.g. `docker start vllm`, `kubectl "
            "scale ...`) to let the deployment lifecycle drive them."
        )

    async def load(self, tenant_id: str | None = None) -> None:
        """Run ``--start-command`` (if any), then wait for a healthy replica (``--start-timeout``)."""
        self.client.http  # noqa: B018 - the HTTP session, made on the loop the backend serves from
        if self._start_command:
            await self._command("start", self._start_command, tenant_id)
        if not await self.pool.wait_healthy(self._start_timeout):
            why = "; ".join(f"{r.base_url}: {r.last_error}" for r in self.pool.replicas)
            await self.pool.close()
            raise RuntimeError(
                f"No upstream answered healthy within {self._start_timeout:g} s ({self.client.scrub(why)}). "
                "Check the --upstream URLs and that the servers are up, or raise --start-timeout."
            )
        if self._upstream_model is None:
            self._upstream_model = await self.client.first_model()
        self._loaded = True

    async def unload(self, tenant_id: str | None = None) -> None:
        """End every forwarded stream with :class:`ModelUnavailableError`; run ``--stop-command``."""
        self._loaded = False
        for task in list(self._relays):
            task.cancel()
        await self.pool.close()
        if self._stop_command:
            try:
                await self._command("stop", self._stop_command, tenant_id)
            except RuntimeError as exc:  # the deployment is stopped for its tenants either way
                logger.warning("%s", exc)

    async def aclose(self) -> None:
        if self._loaded:
            await self.unload()
        await self.client.close()

    def inflight(self, tenant: str) -> int:
        return self._inflight[tenant]

    def upstreams(self) -> list[tuple[str, bool, float | None, int]]:
        return [(r.base_url, r.healthy, r.latency, r.outstanding) for r in self.pool.replicas]

    def requests_by_tenant(self) -> dict[str, tuple[int, int]]:
        # Nothing waits here: the upstream queues and batches what it is sent.
        return {tenant: (n, 0) for tenant, n in self._inflight.items() if n}

    async def _command(self, action: str, command: str, tenant_id: str | None) -> None:
        await run_command(
            action,
            command,
            model=self.upstream_model,
            tenant_id=tenant_id,
            upstreams=[r.base_url for r in self.pool.replicas],
            timeout=self._start_timeout,
            scrub=self.client.scrub,
        )

    # ------------------------------------------------------------------ answers
    async def prepare_completion(self, req: CompletionRequest) -> Start:
        body = body_of(req, self.supports, self.upstream_model)
        choices = len(req.prompts()) * req.n

        async def start(tenant: str) -> GenerationStream:
            return await self._forward(tenant, "/completions", body, choices, streamed=bool(req.stream))

        return start

    async def prepare_chat(self, req: ChatCompletionRequest) -> Start:
        body = body_of(req, self.supports, self.upstream_model)
        check, calls_check = answer_checks(req)

        async def start(tenant: str) -> GenerationStream:
            return await self._forward(
                tenant,
                "/chat/completions",
                body,
                req.n,
                check=check,
                calls_check=calls_check,
                streamed=bool(req.stream),
            )

        return start

    async def prepare_response(self, req: ResponseRequest, conversation: list[dict[str, Any]]) -> Start:
        body, chat = response_body(req, conversation, self.supports, self.upstream_model)
        check, calls_check = answer_checks(chat)

        async def start(tenant: str) -> GenerationStream:
            return await self._forward(
                tenant, "/responses", body, 1, check=check, calls_check=calls_check, events=ResponseEvents()
            )

        return start

    async def _forward(
        self,
        tenant: str,
        path: str,
        body: dict[str, Any],
        choices: int,
        *,
        check: AnswerCheck | None = None,
        calls_check: CallsCheck | None = None,
        events: ResponseEvents | None = None,
        streamed: bool = True,
    ) -> GenerationStream:
        """Send ``body`` to ``path`` of a replica; its events, once the upstream answered 200.

        ``check`` / ``calls_check``: each choice's text / calls are held back until it ends, and sent
        only if the check passes (``_reading.py``). ``events``: the reader of a Responses API stream.
        ``streamed``: False when ``body`` asks for a whole answer, read at once.

        Raises:
            QueueFullError: the tenant has ``max_queue_per_key`` requests in flight.
            ModelUnavailableError: the backend is not loaded (its deployment was stopped).
            ModelNotRunning: no replica is healthy now (503 ``model_starting``, retry after a probe).
            UpstreamError: the upstream refused the request, or no replica could be reached.
        """
        if not self._loaded:
            raise ModelUnavailableError("The upstream is stopped.")
        if self._inflight[tenant] >= self.max_queue_per_key:
            raise QueueFullError(1, self.max_queue_per_key)
        self._inflight[tenant] += 1
        try:
            replica, response = await self.client.open(path, body, streamed)
        except BaseException:
            self._release(tenant)
            raise
        loop = asyncio.get_running_loop()
        sink = LoopSink(loop)
        tools = "tools" in body
        read = Reading(
            sink, chat=path == "/chat/completions", tools=tools, check=check, calls_check=calls_check
        )
        task = loop.create_task(
            relay(
                self.client,
                replica,
                response,
                read,
                streamed=streamed,
                events=events,
                loaded=lambda: self._loaded,
            )
        )
        self._relays.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            # Here, not in the coroutine: a task cancelled before its first step never runs its finally.
            self._relays.discard(done)
            replica.outstanding -= 1
            self._release(tenant)
            response.close()  # a no-op after the relay released it; else the upstream request ends here

        task.add_done_callback(finished)
        stream = GenerationStream(sink, [0], choices, cancel=task.cancel, may_call=tools)
        # A stream dropped without being closed still closes its upstream request.
        fin = weakref.finalize(stream, task.cancel)
        fin.atexit = False
        return stream

    def _release(self, tenant: str) -> None:
        self._inflight[tenant] -= 1
        if self._inflight[tenant] <= 0:
            del self._inflight[tenant]
