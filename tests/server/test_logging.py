"""No API key and no prompt text reach the server's log at INFO (the default level)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ncompass_openai._compat import httpx

SECRET_KEY = "nc-log-test-key-0f3c9a7e51"
SECRET_PROMPT = "PROMPT-TEXT-THAT-MUST-NOT-BE-LOGGED"


def test_info_log_has_no_key_and_no_prompt(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "ncompass_openai.server",
                "--engine",
                "synthetic",
                "--port",
                "0",
                "--db",
                str(tmp_path / "l.sqlite3"),
                "--api-key",
                SECRET_KEY,
                "--log-level",
                "info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            url = None
            while url is None:
                assert time.monotonic() < deadline, log.read_text()
                found = re.findall(r"listening on (http://\S+/v1)", log.read_text())
                url = found[0] if found else None
                time.sleep(0.05)
            headers = {"Authorization": f"Bearer {SECRET_KEY}"}
            while True:
                try:
                    httpx.get(url + "/models", headers=headers)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            httpx.post(
                url + "/completions", headers=headers, json={"model": "synthetic", "prompt": SECRET_PROMPT}
            )
            httpx.post(
                url + "/chat/completions",
                headers=headers,
                json={"model": "synthetic", "messages": [{"role": "user", "content": SECRET_PROMPT}]},
            )
            httpx.post(url + "/completions", headers=headers, json={"model": "nope", "prompt": SECRET_PROMPT})
            httpx.get(url + "/models", headers={"Authorization": f"Bearer {SECRET_KEY}x"})
            httpx.post(url + "/deployment/stop", headers=headers)
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=15)
    text = log.read_text()
    assert "POST /v1/completions" in text  # the access log is on: the test sees real INFO output
    assert SECRET_KEY not in text
    assert SECRET_PROMPT not in text
