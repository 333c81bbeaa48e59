"""The 0.0.x one-liners (``nCompassOLOC``) against the local server, from one thread and from sixteen."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ncompass_openai import NCompass, TextStream, nCompassOLOC

USER = [{"role": "user", "content": "Which tools speed up inference?"}]


@pytest.fixture(autouse=True)
def _one_liners_on_the_local_server(monkeypatch: pytest.MonkeyPatch, base_url: str) -> Iterator[None]:
    monkeypatch.setenv("NCOMPASS_BASE_URL", base_url)
    yield
    nCompassOLOC.close_all()


def _stop_active(api_key: str, base_url: str) -> None:
    with NCompass(api_key=api_key, base_url=base_url) as client:
        for session in client.sessions.list(status="active"):
            client.sessions.stop(session.id)


def test_one_liners_keep_the_0_0_x_calls(
    api_key: str, base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _stop_active(api_key, base_url)
    session = nCompassOLOC().start_session(api_key)
    assert session.status == "active"
    assert nCompassOLOC().model_is_running(api_key) is True
    nCompassOLOC().wait_until_model_running(api_key)

    whole = nCompassOLOC().complete_prompt(api_key, "Tell me more", 12, 0, 0.9, False)
    assert isinstance(whole, str) and whole
    capsys.readouterr()
    # stream=True, pprint=True prints the answer as it arrives, then a newline, and returns None.
    printed = nCompassOLOC().complete_prompt(api_key, "Tell me more", 12, 0, 0.9, True, True)
    assert printed is None
    assert capsys.readouterr().out == whole + "\n"

    iterator = nCompassOLOC().complete_prompt(
        api_key, "Tell me more", max_tokens=12, temperature=0, pprint=False
    )
    assert isinstance(iterator, TextStream)
    nCompassOLOC().print_response(iterator)
    assert capsys.readouterr().out == whole + "\n"

    batch = nCompassOLOC().complete_prompt(api_key, ["one", "two"], max_tokens=5, temperature=0, stream=False)
    assert isinstance(batch, list) and len(batch) == 2 and all(batch)

    chat = nCompassOLOC().complete_chat(api_key, USER, True, max_tokens=9, temperature=0, stream=False)
    assert isinstance(chat, str) and chat
    assert nCompassOLOC().complete_chat(api_key, USER, max_tokens=9, temperature=0, pprint=True) is None
    assert capsys.readouterr().out == chat + "\n"
    chats = nCompassOLOC().complete_chat(api_key, [USER, USER], max_tokens=9, temperature=0, stream=False)
    assert chats == [chat, chat]

    with NCompass(api_key=api_key, base_url=base_url) as client:
        counters = client.sessions.retrieve(session.id)
    assert counters.requests == 8  # a list prompt is one request; a chat batch one per conversation
    assert nCompassOLOC().stop_session(api_key) is True
    with NCompass(api_key=api_key, base_url=base_url) as client:
        assert client.sessions.retrieve(session.id).status == "stopped"


def test_stop_session_waits_for_a_stream_still_being_read(api_key: str, base_url: str) -> None:
    _stop_active(api_key, base_url)
    nCompassOLOC.start_session(api_key)
    stream = nCompassOLOC.complete_prompt(api_key, "Keep going", max_tokens=40)
    assert isinstance(stream, TextStream)
    first = next(stream)
    entry = next(iter(nCompassOLOC._entries.values()))
    assert nCompassOLOC.stop_session(api_key) is True
    # The client is retired (the next call makes a new one) but not closed under the open stream...
    assert nCompassOLOC._entries == {}
    assert not entry.client.is_closed()
    rest = list(stream)
    assert first and rest
    # ...and closed once the stream is done with it.
    assert entry.client.is_closed()


def test_one_liners_from_16_threads_with_two_keys(api_key: str, other_api_key: str, base_url: str) -> None:
    """Sixteen threads, two keys: no error, and each key's session counts exactly its own requests."""
    rounds = 6
    max_tokens = {api_key: 5, other_api_key: 9}  # different, so a request sent with the wrong key shows
    for key in max_tokens:
        _stop_active(key, base_url)
    barrier = threading.Barrier(16)

    def work(i: int) -> tuple[str, list[int], set[int]]:
        key = api_key if i % 2 else other_api_key
        barrier.wait()
        nCompassOLOC().start_session(key)
        lengths = []
        clients = set()
        for r in range(rounds):
            if r % 3 == 0:
                answer = nCompassOLOC().complete_prompt(
                    key, f"thread {i} round {r}", max_tokens[key], stream=False
                )
                assert isinstance(answer, str) and answer
            elif r % 3 == 1:
                pieces = list(nCompassOLOC().complete_prompt(key, f"thread {i} round {r}", max_tokens[key]))
                assert pieces and all(pieces)
            else:
                answer = nCompassOLOC().complete_chat(key, USER, max_tokens=max_tokens[key], stream=False)
                assert isinstance(answer, str) and answer
            clients.add(id(nCompassOLOC._entries[_fingerprint(key)].client))
            lengths.append(max_tokens[key])
        return key, lengths, clients

    from ncompass_openai._oloc import _fingerprint

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(work, range(16)))

    assert len(nCompassOLOC._entries) == 2  # one client per key, made once
    with (
        NCompass(api_key=api_key, base_url=base_url) as a,
        NCompass(api_key=other_api_key, base_url=base_url) as b,
    ):
        for key, client in ((api_key, a), (other_api_key, b)):
            mine = [r for r in results if r[0] == key]
            assert len({c for r in mine for c in r[2]}) == 1  # every thread of a key used the same client
            (session,) = client.sessions.list(status="active")
            assert session.requests == sum(len(r[1]) for r in mine) == 8 * rounds
            assert session.usage.completion_tokens == sum(sum(r[1]) for r in mine)
    for key in max_tokens:
        assert nCompassOLOC().stop_session(key) is True
    assert nCompassOLOC._entries == {}


def test_one_liners_never_show_the_key(api_key: str) -> None:
    nCompassOLOC.model_is_running(api_key)
    assert api_key not in repr(nCompassOLOC.__dict__)
    assert api_key not in repr(nCompassOLOC._entries)
    entry = next(iter(nCompassOLOC._entries.values()))
    assert api_key not in repr(entry.client)


def test_one_liner_clients_are_closed_at_exit(api_key: str, base_url: str) -> None:
    code = (
        "import atexit, os\n"
        "atexit.register(lambda: print('closed' if entry.client.is_closed() else 'open'))  # runs last\n"
        "from ncompass_openai import nCompassOLOC\n"
        "assert nCompassOLOC.model_is_running(os.environ['NCOMPASS_API_KEY'])\n"
        "entry = next(iter(nCompassOLOC._entries.values()))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    env.update(NCOMPASS_API_KEY=api_key, NCOMPASS_BASE_URL=base_url)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "closed"
