"""No API key and no prompt text reach the server's log at INFO (the default level)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .conftest import ServerProcess

SECRET_KEY = "nc-log-test-key-0f3c9a7e51"
SECRET_PROMPT = "PROMPT-TEXT-THAT-MUST-NOT-BE-LOGGED"


def test_info_log_has_no_key_and_no_prompt(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    proc = spawn_server("--db", str(tmp_path / "l.sqlite3"), "--api-key", SECRET_KEY, "--log-level", "info")
    with proc.client(SECRET_KEY) as c:
        c.get("/v1/models")
        c.post("/v1/completions", json={"model": "synthetic", "prompt": SECRET_PROMPT})
        c.post(
            "/v1/chat/completions",
            json={"model": "synthetic", "messages": [{"role": "user", "content": SECRET_PROMPT}]},
        )
        c.post("/v1/completions", json={"model": "nope", "prompt": SECRET_PROMPT})
        c.get("/v1/models", headers={"Authorization": f"Bearer {SECRET_KEY}x"})
        c.post("/v1/deployment/stop")
    time.sleep(0.3)
    proc.stop()
    text = proc.output()
    assert "POST /v1/completions" in text  # the access log is on: the test sees real INFO output
    assert SECRET_KEY not in text
    assert SECRET_PROMPT not in text
