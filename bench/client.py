"""Per-request cost of ``NCompass`` against plain ``openai.OpenAI`` on the same local server.

The server (synthetic engine) runs in its own process, so the clients' CPU time is not mixed with the
server's. Variants run interleaved, block by block in a new random order each round, so machine noise
hits them alike; the report gives each one's median per-request time and its ratio to
``openai.OpenAI`` (goal for ``NCompass``: at most 1.03x). Reads no environment variables; writes the
report to stdout and to bench/results/client.txt.

    python bench/client.py [--rounds 10] [--block 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import openai

from ncompass_openai import NCompass
from ncompass_openai._compat import OPENAI_MAJOR, httpx

KEY = "nc-bench-client-key-000000001"
RESULT = Path(__file__).resolve().parent / "results" / "client.txt"
K = TypeVar("K")


class Report:
    """A benchmark's report: each line printed as it comes and kept, then saved under bench/results/."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
        print(f"\nwritten to {path}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ncompass_openai.server",
            "--engine",
            "synthetic",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--db",
            ":memory:",
            "--log-level",
            "warning",
            "--max-queue-per-key",
            "64",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the benchmark server did not start")


@contextlib.contextmanager
def synthetic_server() -> Iterator[str]:
    """``start_server`` on a free port, stopped at the end of the block; yields its base URL."""
    port = free_port()
    server = start_server(port)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_interleaved(
    variants: Mapping[K, Callable[[], object]], rounds: int, block: int
) -> tuple[dict[K, list[float]], dict[K, list[float]]]:
    """Wall and CPU seconds per call of each variant: ``block`` calls each, in a new order every round."""
    wall: dict[K, list[float]] = {key: [] for key in variants}
    cpu: dict[K, list[float]] = {key: [] for key in variants}
    rng = random.Random(1)
    for _ in range(rounds):
        order = list(variants)
        rng.shuffle(order)
        for key in order:
            call = variants[key]
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(block):
                call()
            wall[key].append((time.perf_counter() - start) / block)
            cpu[key].append((time.process_time() - cpu_start) / block)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=30, help="requests per variant per round")
    args = parser.parse_args()

    with synthetic_server() as base_url:
        plain = openai.OpenAI(api_key=KEY, base_url=base_url, max_retries=4)
        ncompass = NCompass(api_key=KEY, base_url=base_url)
        # Wait until the synthetic model is running (it starts at boot).
        ncompass.deployment.wait_until_running(timeout=60, poll_interval=0.1)
        model = ncompass.resolve_model()
        prompt = {"prompt": "benchmark", "max_tokens": 4, "temperature": 0}

        variants: dict[str, Callable[[], object]] = {
            "openai.OpenAI": lambda: plain.completions.create(model=model, **prompt),  # type: ignore[call-overload]
            # NCompass sends an Idempotency-Key on every POST and the server then keeps the answer for
            # replay: this row is that server-side cost alone, with the client's cost of plain openai.
            "openai.OpenAI + Idempotency-Key": lambda: plain.completions.create(  # type: ignore[call-overload]
                model=model, extra_headers={"Idempotency-Key": uuid.uuid4().hex}, **prompt
            ),
            "NCompass": lambda: ncompass.completions.create(model=model, **prompt),
            "NCompass, model omitted": lambda: ncompass.completions.create(**prompt),
        }
        for call in variants.values():  # warm up connections and caches
            for _ in range(20):
                call()

        per_request, cpu_per_request = run_interleaved(variants, args.rounds, args.block)
        plain.close()
        ncompass.close()

    base = statistics.median(per_request["openai.OpenAI"])
    cpu_base = statistics.median(cpu_per_request["openai.OpenAI"])
    lines = [
        "NCompass vs openai.OpenAI, completions.create (max_tokens=4) on the local synthetic server",
        f"openai {openai.__version__} (major {OPENAI_MAJOR}), python {sys.version.split()[0]}, "
        f"{args.rounds} interleaved rounds x {args.block} requests per variant; server in its own process",
        "",
        f"{'variant':<32} {'wall ms/req':>12} {'ratio':>7} {'client CPU ms/req':>18} {'ratio':>7}",
    ]
    for name, samples in per_request.items():
        median = statistics.median(samples)
        cpu = statistics.median(cpu_per_request[name])
        wall_cols = f"{median * 1000:>12.3f} {median / base:>6.3f}x"
        lines.append(f"{name:<32} {wall_cols} {cpu * 1000:>18.3f} {cpu / cpu_base:>6.3f}x")
    ratio = statistics.median(per_request["NCompass"]) / base
    cpu_ratio = statistics.median(cpu_per_request["NCompass"]) / cpu_base
    lines += [
        "",
        "wall: time per request as the caller sees it (includes the server); client CPU: this process's",
        "CPU time per request (the client's own cost, the server excluded).",
        f"goal: NCompass <= 1.03x openai.OpenAI (wall) -> {'met' if ratio <= 1.03 else 'NOT met'} "
        f"({ratio:.3f}x wall, {cpu_ratio:.3f}x client CPU)",
    ]
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
