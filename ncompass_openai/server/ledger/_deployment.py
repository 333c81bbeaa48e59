"""Deployments: each tenant's model lifecycle, over one shared physical engine.

Every tenant sees its own deployment (stopped → starting → running → stopping, or failed with its
error). The weights are loaded once, while at least one tenant needs them, and freed when none does.
A start waits the configured cold start, then loads the weights if they are not in memory yet, so a
hosted cold start can be imitated locally. A running deployment with no inference for
``idle_shutdown`` seconds is stopped, except around a booking: bookings start the model early enough
(cold start + the measured load time) to be ready at ``start_at`` and keep it until ``end_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._exceptions import ModelNotRunning
from ._bookings import BookingStore
from ._db import Database

__all__ = ["DeploymentManager"]

logger = logging.getLogger("ncompass_openai.server")

# What a first load is guessed to take before one has been measured.
_DEFAULT_LOAD_ESTIMATE = 5.0
_FAILED_RETRY_SECONDS = 30.0


class Loadable(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def loaded(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    @property
    def lifecycle_refusal(self) -> str | None: ...

    @property
    def not_ready_reason(self) -> str | None: ...

    async def load(self, tenant_id: str | None = None) -> None: ...

    async def unload(self, tenant_id: str | None = None) -> None: ...


@dataclass
class _TenantDeployment:
    state: str = "stopped"
    state_since: float = field(default_factory=time.time)
    last_request_at: float | None = None
    estimated_ready_at: float | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None


class DeploymentManager:
    """The deployments of every tenant.

    Args:
        backend: The backend whose model is loaded and freed (``backends/``).
        db: The ledger (desired state and last request time survive a restart).
        bookings: The booking store, read to start early and to skip idle stops.
        idle_shutdown: Seconds without inference before a running deployment is stopped.
        cold_start: Extra seconds every start waits before it loads.
        sweep_interval: Seconds between two sweeper passes (the booking lead includes it).
    """

    def __init__(
        self,
        backend: Loadable,
        db: Database,
        bookings: BookingStore,
        *,
        idle_shutdown: float,
        cold_start: float,
        sweep_interval: float,
    ) -> None:
        self.backend = backend
        self._db = db
        self._bookings = bookings
        self.idle_shutdown = idle_shutdown
        self.cold_start = cold_start
        self.sweep_interval = sweep_interval
        self._tenants: dict[str, _TenantDeployment] = {}
        self._physical = asyncio.Lock()  # serialises load and unload of the weights
        self.load_seconds: float | None = None

    # -- boot and shutdown ------------------------------------------------------------------------

    def restore(self, tenant_ids: list[str], *, autostart: bool) -> None:
        """Create every tenant's deployment; start those that autostart or were running before."""
        for tenant_id in tenant_ids:
            row = self._db.fetchone(
                "SELECT desired, last_request_at FROM deployments WHERE tenant_id=?", (tenant_id,)
            )
            dep = _TenantDeployment(last_request_at=row["last_request_at"] if row else None)
            self._tenants[tenant_id] = dep
            if autostart or (row is not None and row["desired"] == "running"):
                self.start(tenant_id)

    async def boot_error(self) -> str | None:
        """After :meth:`restore`: waits for the starts it began; the error if the model failed to load."""
        tasks = [d.task for d in self._tenants.values() if d.task is not None]
        if tasks:
            await asyncio.wait(tasks)  # their outcome is each deployment's state; a cancel of ours goes on
        failed = [d for d in self._tenants.values() if d.state == "failed"]
        return failed[0].error if failed else None

    async def close(self) -> None:
        for dep in self._tenants.values():
            if dep.task is not None:
                dep.task.cancel()
        tasks = [d.task for d in self._tenants.values() if d.task is not None]
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.backend.loaded:
            with contextlib.suppress(Exception):
                await self.backend.unload()

    # -- reading --------------------------------------------------------------------------------

    def _dep(self, tenant_id: str) -> _TenantDeployment:
        dep = self._tenants.get(tenant_id)
        if dep is None:
            dep = self._tenants[tenant_id] = _TenantDeployment()
        return dep

    def state(self, tenant_id: str) -> str:
        return self._state_of(self._dep(tenant_id))

    def _state_of(self, dep: _TenantDeployment) -> str:
        # Running while the model can answer: a gateway's upstreams may all be down a while.
        if dep.state == "running" and not self.backend.ready:
            return "starting"
        return dep.state

    def load_estimate(self) -> float:
        if self.backend.loaded:
            return 0.0
        return self.load_seconds if self.load_seconds is not None else _DEFAULT_LOAD_ESTIMATE

    def booking_lead(self) -> float:
        """How long before ``start_at`` a booking starts the model."""
        return self.cold_start + (self.load_seconds or _DEFAULT_LOAD_ESTIMATE) + 2 * self.sweep_interval + 0.5

    def to_json(self, tenant_id: str) -> dict[str, Any]:
        dep = self._dep(tenant_id)
        state = self._state_of(dep)
        return {
            "object": "deployment",
            "model": self.backend.model_id,
            "state": state,
            "ready": state == "running",
            "state_since": dep.state_since,
            "last_request_at": dep.last_request_at,
            "idle_shutdown": self.idle_shutdown,
            "estimated_ready_at": dep.estimated_ready_at if dep.state == "starting" else None,
            "error": dep.error,
        }

    def require_running(self, tenant_id: str) -> None:
        """Raise the protocol's 503 unless the tenant's model can answer now (never waits)."""
        dep = self._dep(tenant_id)
        if dep.state == "running" and self.backend.ready:
            return
        if dep.state in ("starting", "running"):  # running, but no upstream replica is healthy now
            eta = (dep.estimated_ready_at or time.time()) - time.time()
            raise ModelNotRunning("starting", retry_after=max(1.0, eta), error=self.backend.not_ready_reason)
        raise ModelNotRunning(dep.state, error=dep.error)

    def note_request(self, tenant_id: str) -> float:
        """An inference request arrived: it resets the idle clock; returns the time to persist."""
        now = time.time()
        self._dep(tenant_id).last_request_at = now
        return now

    def persist_request(self, tenant_id: str, now: float) -> None:
        """Keep the idle clock in the ledger (on the ledger's thread: see ``Database.run``)."""
        self._db.execute(
            "INSERT INTO deployments (tenant_id, desired, last_request_at, updated_at) "
            "VALUES (?, 'running', ?, ?) "
            "ON CONFLICT(tenant_id) DO UPDATE SET last_request_at=excluded.last_request_at",
            (tenant_id, now, now),
        )

    # -- changing -------------------------------------------------------------------------------

    def _set(self, dep: _TenantDeployment, state: str) -> None:
        dep.state = state
        dep.state_since = time.time()

    def _persist_desired(self, tenant_id: str, desired: str) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO deployments (tenant_id, desired, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(tenant_id) DO UPDATE SET desired=excluded.desired, updated_at=excluded.updated_at",
            (tenant_id, desired, now),
        )

    def start(self, tenant_id: str) -> bool:
        """Begin a start; returns False when the deployment is already starting or running."""
        dep = self._dep(tenant_id)
        if dep.state in ("running", "starting"):
            return False
        previous = dep.task
        self._set(dep, "starting")
        dep.error = None
        dep.estimated_ready_at = time.time() + self.cold_start + self.load_estimate()
        self._persist_desired(tenant_id, "running")
        dep.task = asyncio.get_running_loop().create_task(self._run_start(tenant_id, dep, previous))
        return True

    async def _run_start(
        self, tenant_id: str, dep: _TenantDeployment, previous: asyncio.Task[None] | None
    ) -> None:
        try:
            if previous is not None and not previous.done():
                with contextlib.suppress(BaseException):
                    await previous  # a stop still freeing the weights
            if self.cold_start:
                await asyncio.sleep(self.cold_start)
            async with self._physical:
                if not self.backend.loaded:
                    began = time.monotonic()
                    load = asyncio.ensure_future(self.backend.load(tenant_id))
                    try:
                        await asyncio.shield(load)
                    except asyncio.CancelledError:
                        # A stop arrived mid-load: the engine cannot be interrupted, so let it finish
                        # under the lock; the stop then sees the weights loaded and frees them.
                        with contextlib.suppress(Exception):
                            await load
                        raise
                    self.load_seconds = time.monotonic() - began
            self._set(dep, "running")
            dep.estimated_ready_at = None
            logger.info("Deployment of tenant %s is running", tenant_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("Deployment of tenant %s failed to start: %s", tenant_id, exc)
            self._set(dep, "failed")
            dep.estimated_ready_at = None
            dep.error = f"{type(exc).__name__}: {exc}"
            await self._release_if_unused()

    def stop(self, tenant_id: str, *, reason: str = "client") -> bool:
        """Begin a stop; returns False when the deployment is already stopped (or stopping)."""
        dep = self._dep(tenant_id)
        self._persist_desired(tenant_id, "stopped")
        if dep.state in ("stopped", "stopping"):
            return False
        if dep.state == "failed":
            self._set(dep, "stopped")
            return True
        previous = dep.task
        self._set(dep, "stopping")
        dep.estimated_ready_at = None
        logger.info("Stopping the deployment of tenant %s (%s)", tenant_id, reason)
        dep.task = asyncio.get_running_loop().create_task(self._run_stop(dep, previous))
        return True

    async def _run_stop(self, dep: _TenantDeployment, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            previous.cancel()
            with contextlib.suppress(BaseException):
                await previous
        await self._release_if_unused()
        if dep.state == "stopping":
            self._set(dep, "stopped")

    async def _release_if_unused(self) -> None:
        async with self._physical:
            if self.backend.loaded and not any(
                d.state in ("starting", "running") for d in self._tenants.values()
            ):
                await self.backend.unload()

    # -- the sweeper's pass -------------------------------------------------------------------------

    def sweep(self) -> None:
        """Start deployments for upcoming bookings; stop idle ones outside any booking."""
        now = time.time()
        lead = self.booking_lead()
        protected: set[str] = set()
        for booking in self._bookings.live_windows(now):
            if booking["start_at"] - lead <= now:
                tenant_id = booking["tenant_id"]
                protected.add(tenant_id)
                dep = self._tenants.get(tenant_id)
                if dep is None:
                    continue
                # A failed start is retried, but not at every pass: a broken model would spin.
                retry_failed = dep.state == "failed" and now - dep.state_since >= _FAILED_RETRY_SECONDS
                if dep.state == "stopped" or retry_failed:
                    logger.info("Starting tenant %s for a booking", tenant_id)
                    self.start(tenant_id)
        if self.backend.lifecycle_refusal is not None:
            return  # upstreams that are always on: nothing to save by stopping them
        for tenant_id, dep in self._tenants.items():
            if dep.state != "running" or tenant_id in protected:
                continue
            since = max(
                dep.state_since, dep.last_request_at or 0.0, self._bookings.last_end(tenant_id, now) or 0.0
            )
            if now - since >= self.idle_shutdown:
                self.stop(tenant_id, reason="idle")
