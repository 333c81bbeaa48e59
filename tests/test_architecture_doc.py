"""docs/architecture.md names only files and definitions that exist: its traces cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "ncompass_openai" / "server"
PAGE = (ROOT / "docs" / "architecture.md").read_text()
# `path/to/file.py` or `path/to/file.py:name`, and folders like `http/`.
NAMED = re.compile(r"`((?:[\w.]+/)*[\w.]+\.py)(?::(\w+))?`")
FOLDERS = re.compile(r"`((?:\w+/)+)`")


def _resolve(path: str) -> Path:
    return ROOT / path if path.startswith(("ncompass_openai/", "tests/", "docs/")) else SERVER / path


def test_the_page_names_files() -> None:
    assert len(NAMED.findall(PAGE)) > 60  # the traces are there: a page emptied by mistake fails here


def test_every_file_it_names_exists() -> None:
    missing = sorted({path for path, _ in NAMED.findall(PAGE) if not _resolve(path).is_file()})
    assert missing == []


def test_every_folder_it_names_exists() -> None:
    missing = sorted({path for path in FOLDERS.findall(PAGE) if not _resolve(path).is_dir()})
    assert missing == []


def test_every_definition_it_names_is_in_its_file() -> None:
    missing = []
    for path, name in NAMED.findall(PAGE):
        if not name:
            continue
        source = _resolve(path).read_text()
        if not re.search(rf"^\s*(?:async def|def|class) {name}\b|^{name}\b\s*[:=]", source, re.M):
            missing.append(f"{path}:{name}")
    assert missing == []
