"""Every shell snippet of the README and of ``docs/`` that can run offline runs, as written, against a real
local server; the others are each named here with the reason they cannot.

A ```bash block runs as one ``bash -e -o pipefail`` script, top to bottom, with ``NCOMPASS_BASE_URL`` and
``NCOMPASS_API_KEY`` set (its ``export NAME=...`` placeholder lines are what the test sets). A block that
holds any line of ``NOT_OFFLINE`` is not run, and then every command line in it must be one of those:
a runnable line cannot hide in a block that is not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncompass_openai.server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KEY = "nc-test-shell-snippets-key-0123"
BIN = Path(sys.executable).parent

# A line matching one of these cannot run in the test, for the reason given.
NOT_OFFLINE: dict[str, str] = {
    r"^make ": "the build itself: CI runs `make test` and `make demo`",
    r"^pip install ": "needs the package index",
    r"^git clone ": "needs the repository's URL and the network",
    r"^python3 -m venv ": "makes a new environment; `make setup` does the same, and CI runs it",
    r"^\.venv/bin/pytest ": "the test suite itself",
    r"^ncompass serve ": "runs until stopped (tests/test_cli.py starts it as a process)",
    r"^ncompass demo\b": "loads the real model; `make demo` runs it",
    r"^ncompass chat\s*(#|$)": "interactive (tests/test_cli.py drives the chat loop)",
    r"^curl ": "raw HTTP against the real model's id; tests/server covers these routes",
    r"^ +-[Hd] ": "a continued curl line",
}
PLACEHOLDER = re.compile(r"^export (NCOMPASS_\w+)=\.\.\.(\s|$)")


def _commands(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _reason(line: str) -> str | None:
    return next((why for pattern, why in NOT_OFFLINE.items() if re.search(pattern, line)), None)


def _blocks() -> Iterator[tuple[str, str]]:
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"```bash\n(.*?)```", text, re.S):
            line = text.count("\n", 0, match.start(1)) + 1
            yield f"{page.relative_to(ROOT)}:{line}", match.group(1)


BLOCKS = list(_blocks())
RUNNABLE = [pytest.param(b, id=where) for where, b in BLOCKS if not any(map(_reason, _commands(b)))]


def _env(server: LocalServer, key: str = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(
        NCOMPASS_API_KEY=key,
        NCOMPASS_BASE_URL=server.base_url,
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `ncompass`, `nccli-*` and `python` of this venv
        NO_COLOR="1",
        COLUMNS="200",
    )
    return env


def _script(block: str) -> str:
    return "\n".join(line for line in block.splitlines() if not PLACEHOLDER.match(line))


def test_jq_is_there_for_the_snippets_that_pipe_into_it() -> None:
    # `make setup` installs it where it is missing; the snippets' `| jq` lines run, they are not skipped.
    assert shutil.which("jq") is not None, "jq is not on PATH: `make setup` installs it (apt-get install jq)"


@pytest.fixture(scope="module")
def shell_server() -> Iterator[LocalServer]:
    with LocalServer(engine="synthetic", api_keys=[KEY], db=":memory:") as server:
        yield server


def test_the_runnable_snippets_are_found() -> None:
    ids = [p.id for p in RUNNABLE]
    assert any(i.startswith("README.md") for i in ids)
    assert len(ids) >= 3, ids


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_a_block_that_is_not_run_holds_only_lines_that_cannot_run(where: str, block: str) -> None:
    reasons = [_reason(line) for line in _commands(block)]
    if any(reasons):
        assert all(reasons), f"{where}: split the block, these lines can run: " + str(
            [line for line, why in zip(_commands(block), reasons, strict=True) if why is None]
        )


@pytest.mark.parametrize("block", RUNNABLE)
def test_shell_snippet_runs(block: str, shell_server: LocalServer) -> None:
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", _script(block)],
        env=_env(shell_server),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert KEY not in proc.stdout + proc.stderr


def test_the_model_status_loop_stops_on_an_error(shell_server: LocalServer) -> None:
    # The nccli polling loop of docs/cli.md, with a wrong key: exit code 1 at once, not a loop forever.
    [block] = [b for _, b in BLOCKS if "nccli-model-status" in b]
    loop = "\n".join(line for line in _script(block).splitlines() if "nccli-start-model" not in line)
    loop = loop.split("nccli-start-session")[0]
    proc = subprocess.run(
        ["bash", "-c", loop],
        env=_env(shell_server, key="nc-wrong-key-000000000"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "401" in proc.stderr


def test_the_wrong_key_line_shown_in_the_docs_is_the_real_one(shell_server: LocalServer) -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    shown = re.search(r"\$ ncompass model status\n(Error: 401: .*)\n", text)
    assert shown is not None
    proc = subprocess.run(
        [str(BIN / "ncompass"), "model", "status"],
        env=_env(shell_server, key="nc-wrong-key-000000000"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == shown.group(1)
