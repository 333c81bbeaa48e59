from __future__ import annotations

from collections.abc import Callable, Iterator
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
