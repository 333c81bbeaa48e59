from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer

KEY = "nc-test-own-server-key-a"
OTHER_KEY = "nc-test-own-server-key-b"


@pytest.fixture
def make_server() -> Iterator[Callable[..., LocalServer]]:
    """Start a private LocalServer (synthetic engine, in-memory ledger, two tenants) with overrides."""
    started: list[LocalServer] = []

    def make(**overrides: Any) -> LocalServer:
        values: dict[str, Any] = {
            "engine": "synthetic",
            "api_keys": [KEY, OTHER_KEY],
            "db": ":memory:",
            "sweep_interval": 0.05,
        }
        values.update(overrides)
        srv = LocalServer(**values)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


def _client(srv: LocalServer, key: str | None = KEY, **kwargs: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    kwargs.setdefault("timeout", 10.0)
    return httpx.Client(base_url=srv.url, headers=headers, **kwargs)


@pytest.fixture
def client() -> Callable[..., httpx.Client]:
    """``client(srv, key=KEY)``: a raw HTTP client for a private server (first tenant by default)."""
    return _client


@pytest.fixture
def own_keys() -> tuple[str, str]:
    """The two tenant keys of `make_server` servers."""
    return KEY, OTHER_KEY


class ServerProcess:
    """``python -m ncompass_openai.server`` in a subprocess (synthetic engine, port 0), output to a file."""

    def __init__(self, log: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-u",
                    "-m",
                    "ncompass_openai.server",
                    "--engine",
                    "synthetic",
                    "--port",
                    "0",
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while not (found := re.findall(r"listening on (http://\S+/v1)", self.output())):
            assert self.proc.poll() is None, "server exited:\n" + self.output()
            assert time.monotonic() < deadline, "server did not print its address:\n" + self.output()
            time.sleep(0.05)
        self.base_url: str = found[0]
        self.url = self.base_url.removesuffix("/v1")
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not answer /health:\n" + self.output()
            time.sleep(0.05)

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text()

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """Send ``sig`` and wait; a server that does not exit within 15 s is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``spawn_server(*cli_args)``: a server subprocess, SIGKILLed at the end of the test if still up."""
    started: list[ServerProcess] = []

    def spawn(*args: str) -> ServerProcess:
        started.append(ServerProcess(tmp_path / f"server-{len(started)}.log", *args))
        return started[-1]

    yield spawn
    for proc in started:
        proc.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def real(model_server: Any, api_key: str) -> Any:
    """An ``openai.OpenAI`` client of the real-model server (no retries: a failure shows at once)."""
    import openai

    with openai.OpenAI(base_url=model_server.base_url, api_key=api_key, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def real_model(real: Any) -> str:
    """The real-model server's model id."""
    return str(real.models.list().data[0].id)
