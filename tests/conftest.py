from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from _helpers import open_connections


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's own NCOMPASS_* or OPENAI_* settings."""
    for name in list(os.environ):
        if name.startswith(("NCOMPASS_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    yield


# -- the local server -------------------------------------------------------------------------------------

_TENANT_A = "nc-test-tenant-a-0123456789"
_TENANT_B = "nc-test-tenant-b-9876543210"


def _local_server(**overrides: object) -> Iterator[object]:
    from ncompass_openai.server import LocalServer

    # The session-scoped server is built outside the per-test env cleanup: clear it here too.
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("NCOMPASS_", "OPENAI_")):
                mp.delenv(name, raising=False)
        server = LocalServer(**overrides)  # type: ignore[arg-type]
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[object]:
    """A `LocalServer` (synthetic engine, in-memory ledger) shared by the whole run; two tenants."""
    yield from _local_server(engine="synthetic", api_keys=[_TENANT_A, _TENANT_B], db=":memory:")


@pytest.fixture(scope="session")
def api_key() -> str:
    """The first tenant's key on `server`."""
    return _TENANT_A


@pytest.fixture(scope="session")
def other_api_key() -> str:
    """The second tenant's key on `server` (cross-tenant checks)."""
    return _TENANT_B


@pytest.fixture(scope="session")
def base_url(server: object) -> str:
    """`server`'s base URL, ending in /v1."""
    return str(server.base_url)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def model_server() -> Iterator[object]:
    """A `LocalServer` running the real SmolLM2 model (llama engine); key: `api_key`'s value."""
    yield from _local_server(engine="llama", api_keys=[_TENANT_A], db=":memory:")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- open connections -----------------------------------------------------------------------------------


@pytest.fixture
def client_connections() -> Callable[[int], int]:
    """`count(port)`: ESTABLISHED TCP connections from this process to `port`, read from /proc."""
    return open_connections
