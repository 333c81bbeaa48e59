"""Each script in examples/ runs as users run it: a subprocess with NCOMPASS_API_KEY and NCOMPASS_BASE_URL."""

from __future__ import annotations

import re

import pytest

from _helpers import EXAMPLES, run_example
from ncompass_openai import NCompass

# script -> answers it prints (one line each: print_prompt / print_response end every answer with "\n")
ANSWERS = {
    "hello_world.py": 7,
    "fine_grained_control.py": 1,
    "batched_not_streaming.py": 1,
    "chat.py": 1,
    "langchain_chat.py": 3,
    "batch_job.py": 11,
    "prompt_cache.py": 3,
    "gateway.py": 4,
}
# scripts that need the real model (tools): run against it, with the answers they print
MODEL_ANSWERS = {"agent_tools.py": 2}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted({**ANSWERS, **MODEL_ANSWERS})


@pytest.mark.parametrize("name", sorted({**ANSWERS, **MODEL_ANSWERS}))
def test_example_names_the_variables_it_reads(name: str) -> None:
    first = (EXAMPLES / name).read_text().splitlines()[0]
    assert first.startswith("#") and "NCOMPASS_API_KEY" in first and "NCOMPASS_BASE_URL" in first


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_example_runs(name: str, api_key: str, base_url: str) -> None:
    proc = run_example(name, api_key, base_url)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    answers = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(answers) >= ANSWERS[name], proc.stdout
    # The script stopped the sessions it started: nothing left billing.
    with NCompass(api_key=api_key, base_url=base_url) as client:
        assert client.sessions.list(status="active") == []


@pytest.mark.model
def test_prompt_cache_example_with_the_real_model(api_key: str, model_server: object) -> None:
    proc = run_example("prompt_cache.py", api_key, str(model_server.base_url), timeout=240)  # type: ignore[attr-defined]
    assert proc.returncode == 0, proc.stderr
    counts = re.findall(r"\[(\d+) of (\d+) prompt tokens cached\]", proc.stdout)
    assert len(counts) == 3, proc.stdout
    # Every later turn resends the earlier ones, which the cache holds (the answer's last token at most
    # is decoded again, where the template's end-of-turn splits it).
    for turn in (1, 2):
        cached, prompt = (int(n) for n in counts[turn])
        assert cached > int(counts[turn - 1][1]) - 4 and cached < prompt, proc.stdout


@pytest.mark.model
def test_chat_example_with_the_real_model(api_key: str, model_server: object) -> None:
    proc = run_example("chat.py", api_key, str(model_server.base_url), timeout=240)  # type: ignore[attr-defined]
    assert proc.returncode == 0, proc.stderr
    # The real model's answer varies (sampling at temperature 0.5): only its presence is checked.
    assert proc.stdout.strip(), proc.stdout


@pytest.mark.model
def test_the_agent_example_with_the_real_model(api_key: str, model_server: object) -> None:
    proc = run_example("agent_tools.py", api_key, str(model_server.base_url), timeout=240)  # type: ignore[attr-defined]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == MODEL_ANSWERS["agent_tools.py"] and "Sunny" in lines[0], proc.stdout
    with NCompass(api_key=api_key, base_url=str(model_server.base_url)) as client:  # type: ignore[attr-defined]
        assert client.sessions.list(status="active") == []
