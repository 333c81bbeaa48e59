from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's own NCOMPASS_* or OPENAI_* settings."""
    for name in list(os.environ):
        if name.startswith(("NCOMPASS_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    yield


# -- the local server (owner: server) ----------------------------------------------------------------

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


# -- open connections (owner: legacy) -----------------------------------------------------------------


def _client_connections(port: int) -> int:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                count += 1
    return count


@pytest.fixture
def client_connections() -> Callable[[int], int]:
    """`count(port)`: ESTABLISHED TCP connections from this process to `port`, read from /proc."""
    return _client_connections
