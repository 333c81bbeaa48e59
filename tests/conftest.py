from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's own NCOMPASS_* or OPENAI_* settings."""
    for name in list(os.environ):
        if name.startswith(("NCOMPASS_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    yield
