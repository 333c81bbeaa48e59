"""``LocalServer``: the whole server on a free port in a background thread (tests, demos, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from ... import _guard
from ..._compat import httpx
from .._settings import ServerSettings
from .._state import ServerState
from ..engines._base import Engine
from ._app import create_app

__all__ = ["LocalServer", "bind_socket"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; with ``port=0`` the OS picks a free port (read it with ``getsockname``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it; without it every keep-alive request waits ~40 ms for delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class LocalServer:
    """Runs the nCompass server in a daemon thread on ``127.0.0.1`` and a free port.

    Defaults differ from ``ncompass serve`` where a throwaway server needs it: port 0, an in-memory
    database, and a generated key when none is given. ``with LocalServer(engine="synthetic") as srv:``
    starts it and waits until ``/health`` answers (and, with autostart, until every deployment has
    left ``starting``).

    Args:
        settings: Full settings; ``overrides`` are applied on top of them.
        engine_instance: An engine object to serve instead of building ``settings.engine``.
        wait_for_model: Wait in `start()` until the deployments are no longer starting.
        startup_timeout: Seconds `start()` waits before it gives up.
        **overrides: Any [`ServerSettings`][ncompass_openai.server.ServerSettings] field, e.g.
            ``engine="synthetic"``, ``api_keys=[...]``.
    """

    def __init__(
        self,
        settings: ServerSettings | None = None,
        *,
        engine_instance: Engine | None = None,
        wait_for_model: bool = True,
        startup_timeout: float = 120.0,
        **overrides: Any,
    ) -> None:
        values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "db": ":memory:", "log_level": "warning"}
        if settings is not None:
            values.update(settings.model_dump(exclude_unset=True))
        values.update(overrides)
        self.settings = ServerSettings(**values)
        self._engine = engine_instance
        self._wait_for_model = wait_for_model
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._app: FastAPI | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        return f"LocalServer(url={self.url if self.port else None!r}, engine={self.settings.engine!r})"

    @property
    def app(self) -> FastAPI:
        """The running FastAPI app."""
        if self._app is None:
            raise RuntimeError(
                "The LocalServer is not started: call .start() or use it as a context manager."
            )
        return self._app

    @property
    def state(self) -> ServerState:
        """The server's state (``app.state.server``)."""
        state: ServerState = self.app.state.server
        return state

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        if self.port is None:
            raise RuntimeError("The LocalServer is not started.")
        return f"http://{self.settings.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the client's ``base_url``."""
        return self.url + "/v1"

    @property
    def api_keys(self) -> list[str]:
        """The plaintext keys (given, or the one generated), for tests and demos."""
        if self.settings.api_keys:
            return list(self.settings.api_keys)
        generated = self.state.extra.get("generated_api_key")
        return [generated] if generated else []

    def start(self) -> LocalServer:
        """Start serving and wait until ready."""
        if self._thread is not None:
            return self
        sock = bind_socket(self.settings.host, self.settings.port)
        try:
            self._app = create_app(self.settings, engine=self._engine)
        except BaseException:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_level=self.settings.log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name=f"ncompass-server-{self.port}", daemon=True
        )
        self._thread.start()
        self._sock = sock
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError("The local nCompass server stopped while starting; see its log.")
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"The local nCompass server did not answer /health in {self._startup_timeout} s."
                    )
                time.sleep(0.02)
        if self._wait_for_model and self.settings.autostart:
            deployments = self.state.deployments
            tenants = [t.id for t in self.state.tenants.tenants]
            while any(deployments.state(t) == "starting" for t in tenants):
                if time.monotonic() > deadline:
                    raise TimeoutError("The model did not finish loading in time.")
                time.sleep(0.02)

    def stop(self) -> None:
        """Shut down (finishing the lifespan: model unloaded, database closed) and join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None
        self._server = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.port is not None and self.settings.db == ":memory:":
            # Its ledger ended with it: the billing guard has nothing left to stop there at exit.
            _guard.forget_server(self.url)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
