"""The built documentation site: cross-references rendered, every public name in the reference, every page
reachable from the index."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ncompass_openai

ROOT = Path(__file__).resolve().parents[1]
RAW_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):(?:<code>|`)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_no_page_shows_a_raw_sphinx_role(site: Path) -> None:
    found = {
        str(page.relative_to(site)): RAW_ROLE.findall(page.read_text())
        for page in site.rglob("*.html")
        if RAW_ROLE.search(page.read_text())
    }
    assert found == {}


def test_every_public_name_is_in_the_reference(site: Path) -> None:
    html = (site / "reference" / "index.html").read_text()
    anchors = set(re.findall(r'id="([\w.]+)"', html))
    assert len(anchors) > 50  # the reference rendered its objects
    missing = [
        name
        for name in ncompass_openai.__all__
        if not any(a == name or a.endswith("." + name) for a in anchors)
    ]
    assert missing == []


def test_the_index_links_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert {page for page in pages if f"]({page})" not in index} == set()
