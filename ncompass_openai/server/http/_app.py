"""``create_app``: the FastAPI application, its state on ``app.state.server`` and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel

from ..._version import __version__
from .._settings import ServerSettings
from .._state import ServerState
from ..api._errors import CatchAllMiddleware, install_error_handlers
from ..backends import make_backend
from ..engines import Engine
from ..ledger._answers import AnswerStore, prune_idempotency
from ..ledger._auth import TenantRegistry, generate_api_key, hash_key
from ..ledger._bookings import BookingStore
from ..ledger._db import Database
from ..ledger._deployment import DeploymentManager
from ..ledger._response_store import ResponseStore
from ..ledger._sessions import SessionStore
from ._idempotency import IdempotencyMiddleware
from ._limits import BodyLimitMiddleware
from ._openapi import install_openapi
from ._routes_ncompass import REQUEST_MODELS as NCOMPASS_REQUEST_MODELS
from ._routes_ncompass import router as ncompass_router
from ._routes_openai import REQUEST_MODELS as OPENAI_REQUEST_MODELS
from ._routes_openai import router as openai_router

__all__ = ["create_app"]

logger = logging.getLogger("ncompass_openai.server")

_PRUNE_EVERY = 3600.0
_DESCRIPTION = (
    "nCompass's HTTP API: OpenAI's completions, chat and models, plus time-billed sessions, the model "
    "deployment lifecycle and keep-warm bookings. Every route but `/health`, `/openapi.json` and `/docs` "
    "needs `Authorization: Bearer <key>`; every error has OpenAI's shape."
)


class Health(BaseModel):
    status: Literal["ok"]


def create_app(
    settings: ServerSettings | None = None,
    *,
    engine: Engine | None = None,
    on_boot_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the server's app: opens the ledger now, loads the model in the lifespan.

    When no key is configured and the database holds none either, one key is generated; its
    plaintext is kept only in memory (``app.state.server.extra["generated_api_key"]``) so that the
    caller can show it once.

    Args:
        settings: The server's settings (default: from the environment).
        engine: An engine instance to serve instead of building ``settings.engine`` (tests use it to
            tune the synthetic engine).
        on_boot_failure: Called with the error when the model fails to load at boot (``serve`` ends the
            server then: a configuration that can never work).
    """
    settings = settings or ServerSettings()
    db = Database(settings.db_path())
    try:
        state = _build_state(settings, db, engine)
    except BaseException:
        db.close()  # no lifespan will ever run for this app, so nothing else would close the ledger
        raise
    tenants, deployments, backend = state.tenants, state.deployments, state.backend

    answers = AnswerStore(db)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.run(prune_idempotency, db)
        await db.run(state.sessions.sweep)  # sessions that lapsed while the server was down stop then
        deployments.restore([t.id for t in tenants.tenants], autostart=settings.autostart)
        sweeper = asyncio.create_task(_sweep_forever(state))
        watcher = asyncio.create_task(_watch_boot(state, on_boot_failure)) if on_boot_failure else None
        try:
            yield
        finally:
            for task in (sweeper, watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await deployments.close()
            with contextlib.suppress(Exception):
                await backend.aclose()
            await answers.drain()
            db.close()

    app = FastAPI(
        title="nCompass local server",
        description=_DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.server = state
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware, store=answers, tenants=tenants)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    if settings.metrics:
        from ._metrics import MetricsMiddleware, ServerMetrics

        metrics = state.metrics = ServerMetrics()
        app.add_middleware(MetricsMiddleware, metrics=metrics)
        # Outside the schema: no key, not OpenAI's shape, and not what schemathesis fuzzes.
        app.add_api_route("/metrics", metrics.endpoint(state), methods=["GET"], include_in_schema=False)
    app.add_middleware(CatchAllMiddleware)

    @app.get(
        "/health", response_model=None, responses={200: {"model": Health, "description": "The server is up."}}
    )
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(openai_router)
    app.include_router(ncompass_router)
    install_openapi(app, [*OPENAI_REQUEST_MODELS, *NCOMPASS_REQUEST_MODELS])
    return app


async def _watch_boot(state: ServerState, report: Callable[[str], None]) -> None:
    """``report`` is told the error when the model fails to load at boot."""
    error = await state.deployments.boot_error()
    if error is not None:
        report(error)


def _build_state(settings: ServerSettings, db: Database, engine: Engine | None) -> ServerState:
    """The tenants, stores, backend and deployment manager over an open ledger."""
    tenants = TenantRegistry(db)
    extra: dict[str, Any] = {}
    if settings.api_keys:
        tenants.register([hash_key(k) for k in settings.api_keys])
    elif stored := tenants.stored_hashes():
        tenants.register(stored)
    else:
        key = generate_api_key()
        extra["generated_api_key"] = key
        tenants.register([hash_key(key)])

    backend = make_backend(settings, engine)
    bookings = BookingStore(db)
    deployments = DeploymentManager(
        backend,
        db,
        bookings,
        idle_shutdown=settings.idle_shutdown,
        cold_start=settings.cold_start,
        sweep_interval=settings.sweep_interval,
    )
    return ServerState(
        settings=settings,
        db=db,
        tenants=tenants,
        sessions=SessionStore(db),
        bookings=bookings,
        deployments=deployments,
        backend=backend,
        responses=ResponseStore(db),
        created=int(time.time()),
        extra=extra,
    )


async def _sweep_forever(state: ServerState) -> None:
    """Lapsed sessions, idle deployments, upcoming bookings; a failing pass never stops the loop."""
    last_prune = time.monotonic()
    while True:
        await asyncio.sleep(state.settings.sweep_interval)
        try:
            await state.db.run(state.sessions.sweep)
            state.deployments.sweep()
            if time.monotonic() - last_prune > _PRUNE_EVERY:
                await state.db.run(prune_idempotency, state.db)
                last_prune = time.monotonic()
        except Exception:
            logger.exception("The background sweeper failed; it will try again")
