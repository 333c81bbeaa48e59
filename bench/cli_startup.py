"""Startup cost of the ``ncompass`` command: ``ncompass --help`` against ``python -c pass``.

Every variant runs as a fresh subprocess, interleaved round by round so that machine noise hits all of
them alike; the report gives medians and the time each adds over a bare interpreter (goal for
``ncompass --help``: under 150 ms extra). Reads no environment variables.

    python bench/cli_startup.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
NCOMPASS = str(BIN / "ncompass")

VARIANTS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import typer'": [sys.executable, "-c", "import typer"],
    "ncompass --version": [NCOMPASS, "--version"],
    "ncompass --help": [NCOMPASS, "--help"],
    "ncompass model --help": [NCOMPASS, "model", "--help"],
    "python -c 'import openai' (for scale)": [sys.executable, "-c", "import openai"],
}


def run_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - start


def imported_modules(env: dict[str, str]) -> set[str]:
    """Top-level packages that `ncompass --help` imports, from python -X importtime."""
    code = "import sys; sys.argv = ['ncompass', '--help']; from ncompass_openai.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env, check=False
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    # A fixed terminal width keeps Rich's help rendering the same from run to run.
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}

    for argv in VARIANTS.values():  # warm the OS file cache and .pyc files
        run_once(argv, env)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, argv in VARIANTS.items():
            times[name].append(run_once(argv, env))

    base = statistics.median(times["python -c pass"])
    print(f"ncompass CLI startup: median of {args.rounds} interleaved runs each, {sys.version.split()[0]}")
    print(f"{'command':<42}{'median ms':>10}{'extra ms':>10}{'ratio':>8}")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:<42}{med * 1000:>10.1f}{(med - base) * 1000:>10.1f}{med / base:>7.2f}x")
    extra = (statistics.median(times["ncompass --help"]) - base) * 1000
    verdict = "meets" if extra < 150 else "misses"
    print(f"`ncompass --help` adds {extra:.0f} ms over a bare interpreter: {verdict} the 150 ms goal.")
    heavy = sorted(
        imported_modules(env) & {"openai", "httpx", "httpx2", "pydantic", "fastapi", "uvicorn", "llama_cpp"}
    )
    print(f"heavy packages imported by `ncompass --help`: {', '.join(heavy) if heavy else 'none'}")


if __name__ == "__main__":
    main()
