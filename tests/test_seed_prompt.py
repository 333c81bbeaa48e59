"""The seed's own hello-world prompt prints a real answer from the real model, as the examples run it.

SmolLM2-135M-Instruct, given the bare question as a completion prompt, usually ends the text at once (its
end-of-turn token is the likeliest next token after a question). The 0.0.x one-liners ask for at least one
token (vLLM's ``min_tokens``), so they always print text; plain openai calls get the server's default
(``min_tokens: 0``), as from vLLM.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import run_example
from ncompass_openai import NCompass, nCompassOLOC

pytestmark = pytest.mark.model

PROMPT = "Give me 5 tools I can use to accelerate inference of my ML model?"
SEEDS = range(8)


@pytest.fixture(scope="module")
def client(model_server: Any, api_key: str) -> Iterator[NCompass]:
    with NCompass(api_key=api_key, base_url=model_server.base_url, max_retries=0, timeout=120) as client:
        session = client.sessions.start()
        yield client
        client.sessions.stop(session.id)


def test_without_min_tokens_the_model_often_ends_at_once(client: NCompass) -> None:
    # The premise of this file: the server's default (min_tokens 0) lets the model end the text at once.
    texts = [
        client.completions.create(model=client.resolve_model(), prompt=PROMPT, max_tokens=8, seed=seed)
        .choices[0]
        .text
        for seed in SEEDS
    ]
    assert sum(not text.strip() for text in texts) >= 2, texts


def test_min_tokens_holds_back_the_end_of_the_text(client: NCompass) -> None:
    greedy = {"model": client.resolve_model(), "prompt": PROMPT, "max_tokens": 20, "temperature": 0}
    at_once = client.completions.create(**greedy)
    assert at_once.choices[0].finish_reason == "stop"
    assert at_once.usage is not None and at_once.usage.completion_tokens == 1  # the end token alone
    held = client.completions.create(**greedy, extra_body={"min_tokens": 6})
    assert held.usage is not None and held.usage.completion_tokens >= 6
    assert held.choices[0].text.strip()


def test_chat_honours_min_tokens_too(client: NCompass) -> None:
    answer = client.chat.completions.create(
        model=client.resolve_model(),
        messages=[{"role": "user", "content": "Say OK."}],
        max_tokens=12,
        temperature=0,
        extra_body={"min_tokens": 12},
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 12
    assert answer.choices[0].finish_reason == "length"


def test_the_0_0_x_complete_prompt_always_answers(client: NCompass) -> None:
    for seed in SEEDS:
        text = client.complete_prompt(PROMPT, max_tokens=8, stream=False, seed=seed)
        assert isinstance(text, str) and text.strip(), (seed, text)
        pieces = list(client.complete_prompt(PROMPT, max_tokens=8, seed=seed))
        assert "".join(pieces).strip(), (seed, pieces)


def test_the_0_0_x_default_yields_to_the_callers_min_tokens(client: NCompass) -> None:
    # min_tokens=0 is the caller's choice: the model may end at once again (greedy does here).
    assert client.complete_prompt(PROMPT, max_tokens=8, stream=False, temperature=0, min_tokens=0) == ""


def test_one_liner_complete_prompt_answers(model_server: Any, api_key: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("NCOMPASS_BASE_URL", model_server.base_url)
    oloc = nCompassOLOC()
    oloc.start_session(api_key)
    try:
        text = oloc.complete_prompt(api_key, PROMPT, max_tokens=8, stream=False, seed=0)
        assert isinstance(text, str) and text.strip()
    finally:
        oloc.stop_session(api_key)


def test_fine_grained_control_example_prints_an_answer(model_server: Any, api_key: str) -> None:
    proc = run_example("fine_grained_control.py", api_key, str(model_server.base_url), timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), proc.stdout


def test_ncompass_complete_prints_an_answer(model_server: Any, api_key: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=api_key, NCOMPASS_BASE_URL=model_server.base_url, NO_COLOR="1")
    ncompass = str(Path(sys.executable).parent / "ncompass")
    started = subprocess.run(
        [ncompass, "session", "start"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert started.returncode == 0, started.stderr
    try:
        proc = subprocess.run(
            [ncompass, "complete", PROMPT, "--max-tokens", "20"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        subprocess.run([ncompass, "session", "stop"], env=env, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), (proc.stdout, proc.stderr)
    assert "ended the text at once" not in proc.stderr
