"""Every Python snippet of the README that names what it reads (``# Reads ...``) runs, against a real server.

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

README = Path(__file__).resolve().parents[1] / "README.md"
KEY = "nc-test-readme-key-0123456789"
TEXT = README.read_text()


def _snippets() -> Iterator[object]:
    for match in re.finditer(r"```python\n(.*?)```", TEXT, re.S):
        block = match.group(1)
        if block.startswith("# Reads") and "llama_index" not in block:
            line = TEXT.count("\n", 0, match.start(1)) + 1
            marks = [pytest.mark.model] if "real model" in block.splitlines()[0] else []
            yield pytest.param(block, id=f"README.md:{line}", marks=marks)


SNIPPETS = list(_snippets())


@pytest.fixture(scope="module")
def readme_server() -> Iterator[LocalServer]:
    # Its own server: the snippets start and stop sessions and bookings of their key.
    with LocalServer(engine="synthetic", api_keys=[KEY], db=":memory:") as srv:
        yield srv


def test_the_readme_has_runnable_snippets() -> None:
    assert len(SNIPPETS) >= 10


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_readme_snippet_runs(snippet: str, readme_server: LocalServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=KEY, NCOMPASS_BASE_URL=readme_server.base_url)
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", snippet], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
