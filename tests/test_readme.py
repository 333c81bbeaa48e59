"""Every Python snippet of the README and of ``docs/`` that names what it reads (``# Reads ...``) runs,
against a real server; and the README's split into ``docs/`` lost no section.

The LlamaIndex snippet needs openai 2.x: it runs as ``tests/test_integrations.py`` in the openai 2.x
environment instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncompass_openai.server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
KEY = "nc-test-readme-key-0123456789"
# The README's headings before its split into docs/ (version 0.1.0): each must still stand somewhere.
OLD_HEADINGS = Path(__file__).with_name("data").joinpath("readme_headings_0.1.txt").read_text().splitlines()
README_LIMIT = 20 * 1024


def _snippets() -> Iterator[object]:
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"```python\n(.*?)```", text, re.S):
            block = match.group(1)
            if block.startswith("# Reads") and "llama_index" not in block:
                line = text.count("\n", 0, match.start(1)) + 1
                marks = [pytest.mark.model] if "real model" in block.splitlines()[0] else []
                yield pytest.param(block, id=f"{page.relative_to(ROOT)}:{line}", marks=marks)


def _headings(text: str) -> set[str]:
    found: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.add(line.lstrip("#").strip())
    return found


SNIPPETS = list(_snippets())


@pytest.fixture(scope="module")
def readme_server() -> Iterator[LocalServer]:
    # Its own server: the snippets start and stop sessions and bookings of their key.
    with LocalServer(engine="synthetic", api_keys=[KEY], db=":memory:") as srv:
        yield srv


def test_the_docs_have_runnable_snippets() -> None:
    assert len(SNIPPETS) >= 18
    assert any(str(p.id).startswith("README.md") for p in SNIPPETS)  # type: ignore[attr-defined]


def test_the_readme_stays_short() -> None:
    assert len(README.read_bytes()) <= README_LIMIT


def test_no_heading_was_lost_in_the_split() -> None:
    everywhere = set().union(*(_headings(page.read_text()) for page in PAGES))
    missing = [h for h in OLD_HEADINGS if h != "ncompass-openai" and h not in everywhere]
    assert not missing, f"sections of the old README found nowhere in README.md or docs/: {missing}"


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_readme_snippet_runs(snippet: str, readme_server: LocalServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=KEY, NCOMPASS_BASE_URL=readme_server.base_url)
    proc = subprocess.run(  # in a directory of its own: a snippet may write files (a batch job's output)
        [sys.executable, "-X", "dev", "-c", snippet],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
