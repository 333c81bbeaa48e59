"""The wheel a user installs: the package with its ``py.typed``, and nothing of the repository around it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_package_and_no_tests(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("ncompass_openai-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ncompass_openai/py.typed" in names
    assert "ncompass_openai/server/http/_openapi.py" in names
    assert "ncompass_openai/server/backends/gateway/_backend.py" in names  # the deepest folders too
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ncompass_openai"}
    assert not any(name.startswith(("tests/", "docs/", "bench/", "examples/")) for name in names)
