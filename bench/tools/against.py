"""A change against the revision before it: one benchmark run from both trees, side by side.

For a change meant to keep performance as it was (a refactor), each named benchmark (``bench/<name>.py``)
runs from a ``git worktree`` of ``REV`` and from this tree, in turns (``REV``, this tree, ``REV``, ...),
``--pairs`` times, with this venv's interpreter (the worktree's own package first on ``PYTHONPATH``).
Every line of their output that states a ratio (``...: 0.96x``), or a latency a layer adds (``the
gateway adds 1.47 ms at p50``), is set side by side, the medians over the pairs, with this tree's over
``REV``'s. These are ratios each benchmark measures within its own run;
comparing them across the two trees is what tells whether the change moved anything. ::

    .venv/bin/python bench/tools/against.py REV server gateway [--pairs 1] [--bench-args ARGS] [--out FILE]

Each benchmark still writes its own result file, as ``make bench`` has it (``bench/results/<name>.txt`` of
each tree): this tree's last run is the one left in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"(?P<value>\d+\.\d+)x\b")
ADDED = re.compile(r"(?P<value>\d+\.\d+) ms at (?P<where>p\d+)")  # a latency a layer adds


def _run(tree: Path, name: str, extra: list[str]) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(tree / "bench" / f"{name}.py"), *extra],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench/{name}.py failed in {tree} (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - started


def _ratios(output: str) -> dict[str, float]:
    """Each line that states a ratio, by its text before the number (the section's number kept)."""
    found: dict[str, float] = {}
    section = ""
    for line in output.splitlines():
        head = re.match(r"^(\d+)\. ", line)
        if head:
            section = head.group(1) + ". "
        text = line.strip()
        if text.startswith("goal"):
            continue
        start = 0
        for match in RATIO.finditer(text):  # a line may state several: "8x32 wall 1.009x, one stream 0.977x"
            label = text[start : match.start("value")].strip(" ,")
            if not label.startswith("(goal"):  # the goal a ratio is held to, on the same line
                found[section + label] = float(match.group("value"))
            start = match.end()
        if start == 0 and " adds " in line:
            for added in ADDED.finditer(line):
                label = f"{section}{line.split(' adds ')[0].strip()} adds, ms at {added.group('where')}"
                found[label] = float(added.group("value"))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the revision to compare with (e.g. the commit before the change)")
    parser.add_argument("names", nargs="+", help="benchmarks, by their bench/<name>.py")
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--bench-args", default="", help="arguments for every benchmark (e.g. '--rounds 6')")
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    tree = f"this tree ({head.stdout.strip()} and its changes)"
    lines = [f"bench/tools/against.py: {tree} against {args.rev}, {args.pairs} pair(s)"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.rev],
            check=True,
            capture_output=True,
        )
        try:
            for name in args.names:
                before: dict[str, list[float]] = {}
                after: dict[str, list[float]] = {}
                last = ""
                for _ in range(args.pairs):
                    for tree, into in ((base, before), (ROOT, after)):
                        out, took = _run(tree, name, args.bench_args.split())
                        print(
                            f"bench/{name}.py from {'REV' if tree == base else 'this tree'}: {took:.0f} s",
                            flush=True,
                        )
                        for label, value in _ratios(out).items():
                            into.setdefault(label, []).append(value)
                        if tree == ROOT:
                            last = out
                lines.append("")
                lines.append(f"== bench/{name}.py (ratios it measures; median of {args.pairs})")
                lines.append(f"   {'ratio':<70} {args.rev:>9} {'now':>7} {'now/rev':>8}")
                for label in after:
                    if label not in before:
                        continue
                    old, new = statistics.median(before[label]), statistics.median(after[label])
                    unit = " " if " ms at " in label else "x"
                    lines.append(
                        f"   {label[:70]:<70} {old:>8.3f}{unit} {new:>6.3f}{unit} {new / old:>7.3f}x"
                    )
                lines.append(
                    f"   this tree's last run of bench/{name}.py {args.bench_args}:".rstrip(" :") + ":"
                )
                lines.extend(
                    "   | " + line for line in last.splitlines() if "round" not in line or "done" not in line
                )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out is not None:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
