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
import functools
import logging
import weakref
from typing import TYPE_CHECKING, Any

from ..._exceptions import ModelUnavailableError, QueueFullError
from ..._settings import ServerSettings
from ...protocol._responses import ResponseRequest
from ...protocol._schemas import ChatCompletionRequest, CompletionRequest
from ...runtime._bridge import GenerationStream, LoopSink
from .._base import Backend, Start
from ._bodies import answer_checks, body_of, bounds_of
from ._client import UpstreamClient
from ._commands import run_command
from ._fanin import FanIn, split_bodies
from ._reading import Reading
from ._relay import relay
from ._replicas import ReplicaPool
from ._responses import ResponseEvents, response_body

if TYPE_CHECKING:
    import aiohttp

    from ._answer_check import AnswerCheck, CallsCheck
    from ._replicas import Replica

__all__ = ["PLACEHOLDER_MODEL", "GatewayBackend"]

logger = logging.getLogger("ncompass_openai.server")

PLACEHOLDER_MODEL = "upstream"
"""The model's name until the gateway has learned its upstream's (no ``--served-model-name`` and no
``--upstream-model``); a client may have been told it, so it stays a name of the model after."""


class GatewayBackend(Backend):
    """Forwards requests to the replicas of one upstream model.

    Args:
        settings: the server's settings (``upstream``, ``upstream_model``, ``upstream_api_key``,
            ``served_model_name``, ``upstream_supports``, ``upstream_timeout``,
            ``upstream_answer_timeout``, ``health_interval``,
            ``start_command``, ``stop_command``, ``start_timeout``, ``max_queue_per_key``).
    """

    start_waits = True  # a whole answer comes with its first byte

    def __init__(self, settings: ServerSettings) -> None:
        self.client = UpstreamClient(settings)
        declared = set(settings.upstream_supports)
        self.supports = frozenset(declared | {"min_tokens"} if "vllm" in declared else declared)
        self.max_queue_per_key = settings.max_queue_per_key
        self._upstream_model = settings.upstream_model
        self._served_name = settings.served_model_name
        self._named = bool(settings.served_model_name or settings.upstream_model)
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
        return self._served_name or self._upstream_model or PLACEHOLDER_MODEL

    @property
    def not_ready_reason(self) -> str | None:
        return None if self.ready else self.client.not_ready_reason()

    def accepts_model(self, model: str) -> bool:
        return model == self.model_id or (not self._named and model == PLACEHOLDER_MODEL)

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
        """Run ``--start-command`` (if any), then wait for a healthy replica and learn the model's name.

        With a start command, a replica must be healthy within ``--start-timeout`` (else the start
        failed). Without one the upstreams are always on and nothing here can bring them up: the start
        waits for one however long it takes (the deployment stays ``starting``, its requests 503 with
        ``Retry-After``), saying once per ``--start-timeout`` which upstream is down and why.
        """
        self.client.http  # noqa: B018 - the HTTP session, made on the loop the backend serves from
        if self._start_command:
            await self._command("start", self._start_command, tenant_id)
        while not await self.pool.wait_healthy(self._start_timeout):
            why = self.client.scrub(self.pool.why_down())
            if self._start_command:
                await self.pool.close()
                raise RuntimeError(
                    f"No upstream answered healthy within {self._start_timeout:g} s ({why}). Check the "
                    "--upstream URLs and that the servers are up, or raise --start-timeout."
                )
            logger.warning(
                "No upstream is healthy yet (%s): the deployment stays starting, and its requests answer 503 "
                "with Retry-After, until one is. Check the --upstream URLs and that the servers are up.",
                why,
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
        prompts = req.prompts()
        choices = len(prompts) * req.n
        limit, min_tokens = bounds_of(req, self.supports)

        async def start(tenant: str) -> GenerationStream:
            return await self._forward(
                tenant,
                "/completions",
                body,
                choices,
                streamed=bool(req.stream),
                limit=limit,
                min_tokens=min_tokens,
                split="vllm" not in self.supports and choices > 1,
                prompts=list(prompts),
            )

        return start

    async def prepare_chat(self, req: ChatCompletionRequest) -> Start:
        body = body_of(req, self.supports, self.upstream_model)
        check, calls_check = answer_checks(req)
        limit, min_tokens = bounds_of(req, self.supports)

        async def start(tenant: str) -> GenerationStream:
            return await self._forward(
                tenant,
                "/chat/completions",
                body,
                req.n,
                check=check,
                calls_check=calls_check,
                streamed=bool(req.stream),
                limit=limit,
                min_tokens=min_tokens,
                split="vllm" not in self.supports and req.n > 1,
            )

        return start

    async def prepare_response(self, req: ResponseRequest, conversation: list[dict[str, Any]]) -> Start:
        body, chat = response_body(req, conversation, self.supports, self.upstream_model)
        check, calls_check = answer_checks(chat)

        async def start(tenant: str) -> GenerationStream:
            return await self._forward(
                tenant,
                "/responses",
                body,
                1,
                check=check,
                calls_check=calls_check,
                events=ResponseEvents(),
                limit=req.max_output_tokens,
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
        limit: int | None = None,
        min_tokens: int = 0,
        split: bool = False,
        prompts: list[Any] | None = None,
    ) -> GenerationStream:
        """Send ``body`` to ``path`` of a replica; its events, once the upstream answered 200.

        ``check`` / ``calls_check``: each choice's text / calls are held back until it ends, and sent
        only if the check passes (``_reading.py``). ``events``: the reader of a Responses API stream.
        ``streamed``: False when ``body`` asks for a whole answer, read at once. ``limit`` /
        ``min_tokens``: the bounds the gateway enforces on each choice itself (``_reading.py``).
        ``split``: one upstream request per choice (``_fanin.py``); ``prompts``: a completions request's.

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
        bodies = split_bodies(body, prompts, choices // len(prompts or [None])) if split else [(body, True)]
        self._inflight[tenant] += 1
        try:
            opened = await self._open_all(path, [b for b, _ in bodies], streamed)
        except BaseException:
            self._release(tenant)
            raise
        loop = asyncio.get_running_loop()
        sink = LoopSink(loop)
        fan = FanIn(sink, len(bodies)) if split else None
        tools = "tools" in body
        tasks: list[asyncio.Task[None]] = []
        for k, ((replica, response), (_, counts_prompt)) in enumerate(zip(opened, bodies, strict=True)):
            read = Reading(
                fan.part(k, counts_prompt) if fan is not None else sink,
                chat=path == "/chat/completions",
                tools=tools,
                check=check,
                calls_check=calls_check,
                choices=1 if split else choices,
                limit=limit,
                min_tokens=min_tokens,
            )
            relaying = relay(
                self.client,
                replica,
                response,
                read,
                streamed=streamed,
                events=events,
                loaded=lambda: self._loaded,
            )
            tasks.append(loop.create_task(relaying))
            self._relays.add(tasks[-1])
            tasks[-1].add_done_callback(functools.partial(self._relayed, replica, response))
        left = [len(tasks)]

        def finished(done: asyncio.Task[None]) -> None:
            left[0] -= 1
            if not left[0]:
                self._release(tenant)

        for task in tasks:
            task.add_done_callback(finished)

        def cancel() -> None:
            for task in tasks:
                task.cancel()

        stream = GenerationStream(sink, [0], choices, cancel=cancel, may_call=tools)
        # A stream dropped without being closed still closes its upstream requests.
        fin = weakref.finalize(stream, cancel)
        fin.atexit = False
        return stream

    async def _open_all(
        self, path: str, bodies: list[dict[str, Any]], streamed: bool
    ) -> list[tuple[Replica, aiohttp.ClientResponse]]:
        """Each body sent, once all were answered 200; if one fails, the others are closed and it raises."""
        if len(bodies) == 1:
            return [await self.client.open(path, bodies[0], streamed)]
        results = await asyncio.gather(
            *(self.client.open(path, b, streamed) for b in bodies), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            for result in results:
                if not isinstance(result, BaseException):
                    self._relayed(*result, None)
            raise failed[0]
        return [r for r in results if not isinstance(r, BaseException)]

    def _relayed(
        self, replica: Replica, response: aiohttp.ClientResponse, done: asyncio.Task[None] | None
    ) -> None:
        """One upstream request ended (its relay done, or never started)."""
        # Here, not in the coroutine: a task cancelled before its first step never runs its finally.
        if done is not None:
            self._relays.discard(done)
        replica.outstanding -= 1
        response.close()  # a no-op after the relay released it; else the upstream request ends here

    def _release(self, tenant: str) -> None:
        self._inflight[tenant] -= 1
        if self._inflight[tenant] <= 0:
            del self._inflight[tenant]
