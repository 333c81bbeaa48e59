"""Helpers shared by the client tests: sync/async-agnostic calls, request recording, open sockets."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ncompass_openai import AsyncNCompass, NCompass
from ncompass_openai._compat import httpx

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(  # an examples/ script as users run it: a subprocess with the key and URL set
    name: str, api_key: str, base_url: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=api_key, NCOMPASS_BASE_URL=base_url, PYTHONIOENCODING="utf-8")
    return subprocess.run(
        # -X dev shows ResourceWarnings: an unclosed client or socket at exit would be reported.
        [sys.executable, "-X", "dev", str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=EXAMPLES,
    )


async def resolve(value: Any) -> Any:
    """Awaits ``value`` if the async client returned a coroutine; the sync client's result as is."""
    if inspect.isawaitable(value):
        return await value
    return value


class Recorder:
    """Records every request and response the client really sent and got (httpx event hooks)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []

    def on_request(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def on_response(self, response: httpx.Response) -> None:
        self.responses.append(response)

    async def aon_request(self, request: httpx.Request) -> None:
        self.on_request(request)

    async def aon_response(self, response: httpx.Response) -> None:
        self.on_response(response)

    def http_client(self, kind: str) -> Any:
        if kind == "sync":
            return httpx.Client(event_hooks={"request": [self.on_request], "response": [self.on_response]})
        return httpx.AsyncClient(event_hooks={"request": [self.aon_request], "response": [self.aon_response]})


def make_client(kind: str, **kwargs: Any) -> NCompass | AsyncNCompass:
    return NCompass(**kwargs) if kind == "sync" else AsyncNCompass(**kwargs)


async def close(client: NCompass | AsyncNCompass) -> None:
    await resolve(client.close())


def files_open_by_this_process(path: object) -> list[str]:
    """The file descriptors of this process open on ``path`` (a SQLite ledger, say), from /proc."""
    wanted = os.path.realpath(str(path))
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == wanted:
                found.append(fd)
        except OSError:
            continue
    return found


def open_connections(port: int) -> int:
    """ESTABLISHED connections of this process to ``port`` (client side), read from /proc (no psutil)."""
    inodes: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            # 01: ESTABLISHED. A pooled connection that the server has closed (CLOSE_WAIT) carries nothing.
            if parts[9] in inodes and remote_port == port and parts[3] == "01":
                count += 1
    return count


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def llama_cpp_server(log: Path, key: str | None = None) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server (``tests/_llama_cpp_server.py``) on the SmolLM2 GGUF and a free
    port, until the block ends; yields its base URL (with ``/v1``)."""
    from ncompass_openai.server.engines.llama import default_model_path

    port = free_port()
    args = ["--model", str(default_model_path()), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--n_ctx", "1024", "--n_threads", "2"] + (["--api_key", key] if key else [])
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_llama_cpp_server.py")), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, "llama_cpp.server exited:\n" + log.read_text()
            try:
                if httpx.get(url + "/v1/models", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not answer:\n" + log.read_text()
            time.sleep(0.2)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
