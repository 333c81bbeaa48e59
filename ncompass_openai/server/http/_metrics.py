"""``GET /metrics``: the server in Prometheus's text format, for a scraper (``ncompass serve --metrics``).

Served without a key, so it carries no key and no tenant id in clear: a tenant appears as
:func:`tenant_label`, a short hash of its id. Counters and the latency histogram are updated by
:class:`MetricsMiddleware` and :meth:`ServerMetrics.count_tokens` as requests are answered; what the
server holds in memory or in the ledger (queues, sessions, billed seconds, deployment states) is read at
each scrape, so it cannot drift from what the API answers. ::

    metrics = ServerMetrics()            # one registry per app: two servers in one process stay apart
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_api_route("/metrics", metrics.endpoint(state), include_in_schema=False)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._version import __version__

if TYPE_CHECKING:
    from .._state import ServerState

__all__ = ["DEPLOYMENT_STATES", "MetricsMiddleware", "ServerMetrics", "tenant_label"]

DEPLOYMENT_STATES = ("stopped", "starting", "running", "stopping", "failed")
# Request latency buckets, seconds: from a cached one-token answer to a long stream.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_UNMATCHED = "unmatched"  # a path no route serves (its 404): one label, not one per path tried


def tenant_label(tenant_id: str) -> str:
    """A tenant as metrics name it: 12 hex digits of a hash of its id (never the id itself)."""
    return hashlib.sha256(("metrics:" + tenant_id).encode()).hexdigest()[:12]


class ServerMetrics:
    """The server's counters and histogram, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ncompass_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ncompass_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer (a stream's last byte).",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "ncompass_tokens",
            "Tokens of inference requests, by route and kind (prompt or completion).",
            ["route", "kind"],
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_tokens(self, route: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens.labels(route, "prompt").inc(prompt_tokens)
        self.tokens.labels(route, "completion").inc(completion_tokens)

    def endpoint(self, state: ServerState) -> Callable[[], Awaitable[Response]]:
        """The ``GET /metrics`` handler over ``state``."""

        async def metrics() -> Response:
            sessions = await state.db.run(state.sessions.totals)
            families = [*self.registry.collect(), *_state_families(state, sessions)]
            return Response(generate_latest(_Families(families)), media_type=CONTENT_TYPE_LATEST)

        return metrics


class _Families:
    """What ``generate_latest`` needs of a registry: the metric families to write."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _state_families(state: ServerState, sessions: dict[str, tuple[int, float]]) -> list[Metric]:
    """What the server holds now: info, queues, sessions, billed seconds, deployment states."""
    backend = state.backend
    info = GaugeMetricFamily(
        "ncompass_server_info",
        "The server's version, engine and model.",
        labels=["version", "engine", "model"],
    )
    info.add_metric([__version__, backend.engine_name, backend.model_id], 1)
    running = GaugeMetricFamily(
        "ncompass_requests_running", "Inference requests generating now, by tenant.", labels=["tenant"]
    )
    queued = GaugeMetricFamily(
        "ncompass_requests_queued",
        "Inference requests waiting for a batch slot, by tenant.",
        labels=["tenant"],
    )
    active = GaugeMetricFamily("ncompass_sessions_active", "Sessions open now, by tenant.", labels=["tenant"])
    billed = CounterMetricFamily(
        "ncompass_billed_seconds",
        "Session seconds billed since the ledger began (open sessions up to now), by tenant.",
        labels=["tenant"],
    )
    deployment = GaugeMetricFamily(
        "ncompass_deployment_state",
        "1 for each tenant's current deployment state, 0 for the others.",
        labels=["tenant", "state"],
    )
    load = backend.requests_by_tenant()
    for tenant in state.tenants.tenants:
        label = tenant_label(tenant.id)
        run, wait = load.get(tenant.id, (0, 0))
        running.add_metric([label], run)
        queued.add_metric([label], wait)
        count, seconds = sessions.get(tenant.id, (0, 0.0))
        active.add_metric([label], count)
        billed.add_metric([label], seconds)
        now = state.deployments.state(tenant.id)
        for name in DEPLOYMENT_STATES:
            deployment.add_metric([label, name], 1 if name == now else 0)
    families: list[Metric] = [info, running, queued, active, billed, deployment]
    replicas = backend.upstreams()
    if replicas:
        healthy = GaugeMetricFamily(
            "ncompass_upstream_healthy", "1 while an upstream replica is in the rotation.", labels=["replica"]
        )
        probe = GaugeMetricFamily(
            "ncompass_upstream_probe_seconds",
            "Seconds the last health probe of an upstream replica took.",
            labels=["replica"],
        )
        outstanding = GaugeMetricFamily(
            "ncompass_upstream_requests", "Requests in flight to an upstream replica.", labels=["replica"]
        )
        for url, ok, latency, count in replicas:
            label = _without_userinfo(url)
            healthy.add_metric([label], 1 if ok else 0)
            outstanding.add_metric([label], count)
            if latency is not None:
                probe.add_metric([label], latency)
        families += [healthy, probe, outstanding]
    return families


def _without_userinfo(url: str) -> str:
    """A replica's URL as a label: credentials written into it (``http://user:pass@host``) left out."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return scheme + sep + host.rpartition("@")[2] + slash + path


class MetricsMiddleware:
    """Counts every HTTP request by route template and status, and times it to its last byte.

    Pure ASGI (a streamed answer is timed to its end, and nothing is buffered). The route is the one
    the router matched (``scope["route"]``); a request answered before routing (an idempotent replay,
    a too-large body) is matched here against the app's routes.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = _route_of(scope)
            if route != "/metrics":
                self.metrics.observe(route, scope["method"], status, time.perf_counter() - started)


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(app, "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(candidate.path)
    return _UNMATCHED
