"""One NCompass shared by 32 threads, 100 requests each, against the synthetic engine: no error, and no
connection left open once the client is closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from _helpers import open_connections, wait_for
from ncompass_openai import NCompass
from ncompass_openai.server import LocalServer

THREADS = 32
REQUESTS = 100  # 3,200 requests through one client: enough to race its pool, in a third of the time
KEY = "nc-test-load-tenant-00000001"


@pytest.fixture(scope="module")
def load_server() -> Iterator[LocalServer]:
    # The per-key queue is sized for the 32 threads: this test measures the client, not the 429 path.
    with LocalServer(engine="synthetic", api_keys=[KEY], max_queue_per_key=THREADS * 2) as srv:
        yield srv


def test_32_threads_share_one_client(load_server: LocalServer) -> None:
    port = load_server.port
    assert port is not None
    before = open_connections(port)
    client = NCompass(api_key=KEY, base_url=load_server.base_url)
    errors: list[BaseException] = []
    done = [0] * THREADS
    barrier = threading.Barrier(THREADS)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(REQUESTS):
                completion = client.completions.create(prompt="load", max_tokens=1, temperature=0)
                assert completion.choices[0].finish_reason in ("length", "stop")
                done[i] += 1
        except BaseException as exc:  # every failure is counted, none is lost in a thread
            errors.append(exc)

    began = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    elapsed = time.monotonic() - began
    while_open = open_connections(port)
    client.close()

    assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
    assert sum(done) == THREADS * REQUESTS
    assert 0 < while_open - before <= THREADS  # the pool reused connections, at most one per thread
    assert wait_for(lambda: open_connections(port) == before, timeout=5), "connections left open"
    print(f"{THREADS * REQUESTS} requests in {elapsed:.1f} s ({THREADS * REQUESTS / elapsed:.0f}/s)")
