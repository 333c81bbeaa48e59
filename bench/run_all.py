"""Runs every benchmark in bench/ (``make bench``) and saves each one's output to bench/results/<name>.txt.

Each benchmark runs as its own process with this interpreter, one after the other (running them side by
side would make them measure each other). Reads no environment variables.

    python bench/run_all.py [NAME ...]     # default: every bench/*.py but this file
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("*.py") if p.name != Path(__file__).name)
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in names:
        script = HERE / f"{name}.py"
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=HERE.parent)
        took = time.perf_counter() - started
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stdout.write(proc.stderr)
            print(f"== {name} FAILED (exit {proc.returncode}, {took:.1f} s); its old result is kept")
            failed.append(name)
            continue
        (RESULTS / f"{name}.txt").write_text(proc.stdout)
        print(f"== {name} done in {took:.1f} s -> bench/results/{name}.txt", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
