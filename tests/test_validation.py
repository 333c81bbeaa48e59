"""Client-side validation of the 0.0.x methods: bad arguments raise ValueError before any request.

The clients point at a port where nothing listens, with retries off: had any request been made, the
error would be openai's ``APIConnectionError``, not the ``ValueError`` the table expects.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from ncompass_openai import AsyncNCompass, NCompass, nCompassOLOC

USER = {"role": "user", "content": "hi"}

# (method, positional args, keyword args, a regex the message must match: the argument and its range)
CASES: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("complete_prompt", ("",), {}, r"prompt is empty"),
    ("complete_prompt", ([],), {"stream": False}, r"prompt is an empty list"),
    ("complete_prompt", (["ok", 3],), {"stream": False}, r"prompt\[1\] is an int, not a string"),
    ("complete_prompt", (["ok", ""],), {"stream": False}, r"prompt\[1\] is empty"),
    ("complete_prompt", (None,), {}, r"prompt is a NoneType"),
    ("complete_prompt", ("hi",), {"max_tokens": 0}, r"max_tokens must be ≥ 1"),
    ("complete_prompt", ("hi",), {"max_tokens": -5}, r"max_tokens must be ≥ 1"),
    ("complete_prompt", ("hi",), {"max_tokens": 2.5}, r"max_tokens must be a whole number ≥ 1"),
    ("complete_prompt", ("hi",), {"max_tokens": True}, r"max_tokens must be a whole number ≥ 1"),
    ("complete_prompt", ("hi",), {"temperature": -0.1}, r"temperature must be in \[0, 2\]"),
    ("complete_prompt", ("hi",), {"temperature": 2.01}, r"temperature must be in \[0, 2\]"),
    ("complete_prompt", ("hi",), {"temperature": float("nan")}, r"temperature must be a number in \[0, 2\]"),
    ("complete_prompt", ("hi",), {"temperature": "hot"}, r"temperature must be a number in \[0, 2\]"),
    ("complete_prompt", ("hi",), {"top_p": 0}, r"top_p must be in \(0, 1\]"),
    ("complete_prompt", ("hi",), {"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ("complete_prompt", ("hi",), {"min_tokens": -1}, r"min_tokens must be a whole number ≥ 0"),
    ("complete_prompt", ("hi",), {"min_tokens": "3"}, r"min_tokens must be a whole number ≥ 0"),
    ("complete_prompt", ("hi",), {"max_tokens": 4, "min_tokens": 5}, r"min_tokens \(5\) cannot be more than"),
    ("complete_chat", ([USER],), {"max_tokens": 2, "min_tokens": 3}, r"min_tokens \(3\) cannot be more than"),
    ("complete_prompt", (["a", "b"],), {"stream": True}, r"stream=True streams one prompt.*stream=False"),
    ("complete_chat", ([],), {}, r"messages is empty"),
    ("complete_chat", ("hello",), {}, r"messages is a str: pass a list of messages"),
    ("complete_chat", (["hello"],), {}, r"messages\[0\] is a str, not a dict"),
    ("complete_chat", ([{"content": "hi"}],), {}, r'messages\[0\] has no "role"'),
    ("complete_chat", ([{"role": "robot", "content": "hi"}],), {}, r"unknown role 'robot'.*must be one of"),
    ("complete_chat", ([{"role": "user"}],), {}, r'messages\[0\] has no "content"'),
    ("complete_chat", ([{"role": "user", "content": 5}],), {}, r'messages\[0\]\["content"\] is an int'),
    ("complete_chat", ([[USER], [{"role": "x", "content": "y"}]],), {"stream": False}, r"messages\[1\]\[0\]"),
    ("complete_chat", ([[USER], []],), {"stream": False}, r"messages\[1\] is empty"),
    ("complete_chat", ([USER],), {"max_tokens": 0}, r"max_tokens must be ≥ 1"),
    ("complete_chat", ([USER],), {"temperature": 3}, r"temperature must be in \[0, 2\]"),
    ("complete_chat", ([USER],), {"top_p": -1}, r"top_p must be in \(0, 1\]"),
    ("complete_chat", ([[USER], [USER]],), {}, r"stream=True streams one conversation"),
    ("complete_chat", ([USER],), {"chat_template": 42}, r"chat_template must be a Jinja template string"),
    ("complete_chat", ([USER],), {"template_type": "llama"}, r"template_type is no longer supported"),
    (
        "complete_chat",
        ([USER, {"role": "assistant", "content": "Sure"}],),
        {"continue_final_message": True},
        r"add_generation_prompt=False",
    ),
]


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A base URL where nothing listens (the port is reserved by a bound, never-listening socket)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


@pytest.mark.parametrize(("method", "args", "kwargs", "message"), CASES)
def test_sync_rejects_bad_arguments_before_any_request(
    dead_url: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    client = NCompass(api_key="nc-unused", base_url=dead_url, model="m", max_retries=0)
    with client, pytest.raises(ValueError, match=message):
        getattr(client, method)(*args, **kwargs)


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "args", "kwargs", "message"), CASES)
async def test_async_rejects_bad_arguments_before_any_request(
    dead_url: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    async with AsyncNCompass(api_key="nc-unused", base_url=dead_url, model="m", max_retries=0) as client:
        with pytest.raises(ValueError, match=message):
            await getattr(client, method)(*args, **kwargs)


@pytest.mark.parametrize(("method", "args", "kwargs", "message"), CASES[:3] + CASES[16:19])
def test_one_liners_reject_bad_arguments_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
    dead_url: str,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    monkeypatch.setenv("NCOMPASS_BASE_URL", dead_url)
    monkeypatch.setenv("NCOMPASS_MAX_RETRIES", "0")
    with pytest.raises(ValueError, match=message):
        getattr(nCompassOLOC, method)("nc-validation-key", *args, **kwargs)
    nCompassOLOC.close_all()


@pytest.mark.parametrize("api_key", ["", "   ", None, 7])
def test_one_liners_reject_a_missing_key(api_key: Any) -> None:
    with pytest.raises(ValueError, match="api_key must be a non-empty string"):
        nCompassOLOC.complete_prompt(api_key, "hi")


def test_valid_arguments_pass_validation(dead_url: str) -> None:
    """The boundaries themselves are allowed: the call gets as far as the (dead) network."""
    import openai

    with NCompass(api_key="nc-unused", base_url=dead_url, model="m", max_retries=0) as client:
        for kwargs in ({"max_tokens": 1, "temperature": 0, "top_p": 1}, {"temperature": 2, "top_p": 1e-9}):
            with pytest.raises(openai.APIConnectionError):
                client.complete_prompt("hi", stream=False, **kwargs)
        tool_call = {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]}
        parts = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
        with pytest.raises(openai.APIConnectionError):
            client.complete_chat([USER, tool_call, parts], stream=False)
