"""The protocol's promises as a client sees them, checked against every kind of server: the local server,
a gateway over the synthetic engine, and (marked ``model``) a gateway over llama-cpp-python's own
server, which nobody here wrote. Each gateway is checked from the moment it boots: the model id it gives
while its upstream is still being reached must keep working once it is.

One check per promise of docs/protocol.md that holds whatever serves it; each runs on every target.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from _helpers import llama_cpp_server, wait_for
from ncompass_openai import NCompass, nCompass
from ncompass_openai._compat import httpx
from ncompass_openai.server import LocalServer

KEY = "nc-protocol-check-key-0123456789"
UP = "nc-protocol-check-upstream-key-42"


@dataclass
class Target:
    base_url: str
    model: str  # the id the server gave when first asked (for a gateway: right after it booted)

    def http(self, key: str = KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url.removesuffix("/v1"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )


def _gateway(upstream: str, key: str) -> Iterator[Target]:
    gw = LocalServer(
        engine="openai", upstream=[upstream], upstream_api_key=key, api_keys=[KEY], db=":memory:",
        health_interval=0.2, wait_for_model=False,
    ).start()  # fmt: skip
    try:
        with httpx.Client(timeout=10) as c:  # at once after boot: the deployment may still be starting
            first = c.get(gw.base_url + "/models", headers={"Authorization": f"Bearer {KEY}"}).json()
        target = Target(str(gw.base_url), first["data"][0]["id"])
        with target.http() as c:
            assert wait_for(lambda: c.get("/v1/deployment").json()["state"] == "running", 120)
        yield target
    finally:
        gw.stop()


@pytest.fixture(
    scope="module", params=["local", "gateway", pytest.param("llama-cpp-python", marks=pytest.mark.model)]
)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if request.param == "local":
        srv = LocalServer(engine="synthetic", api_keys=[KEY], db=":memory:").start()
        try:
            yield Target(str(srv.base_url), "synthetic")
        finally:
            srv.stop()
    elif request.param == "gateway":
        upstream = LocalServer(engine="synthetic", api_keys=[UP], db=":memory:").start()
        try:
            yield from _gateway(str(upstream.base_url), UP)
        finally:
            upstream.stop()
    else:
        with llama_cpp_server(tmp_path_factory.mktemp("llama") / "server.log", key=UP) as url:
            yield from _gateway(url, UP)


@pytest.fixture
def oai(target: Target) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=target.base_url, api_key=KEY, max_retries=0, timeout=120) as client:
        yield client


ASK = [{"role": "user", "content": "Name a colour."}]


def test_the_model_id_it_gave_first_is_the_keys_model(target: Target, oai: openai.OpenAI) -> None:
    assert len(oai.models.list().data) == 1  # the key's one model (its id learned since, for a gateway)
    assert oai.models.retrieve(target.model).id
    answer = oai.chat.completions.create(model=target.model, messages=ASK, max_tokens=3)  # type: ignore[arg-type]
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_an_unknown_model_is_a_404_naming_it(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="no-such-model", messages=ASK, max_tokens=3)  # type: ignore[arg-type]
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"  # type: ignore[index]


def test_a_whole_answer_has_its_usage_within_the_limit(target: Target, oai: openai.OpenAI) -> None:
    for limit in ({"max_tokens": 4}, {"max_completion_tokens": 4}):
        answer = oai.chat.completions.create(model=target.model, messages=ASK, **limit)  # type: ignore[arg-type]
        assert answer.usage is not None and 1 <= answer.usage.completion_tokens <= 4
        assert answer.choices[0].message.content is not None


def test_a_stream_ends_with_its_usage_chunk(target: Target, oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=target.model, messages=ASK, max_tokens=4, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")


def test_a_list_prompt_and_n_give_one_real_choice_each(target: Target, oai: openai.OpenAI) -> None:
    listed = oai.completions.create(model=target.model, prompt=["The sky is", "Grass is"], max_tokens=4)
    assert sorted(c.index for c in listed.choices) == [0, 1]
    assert all(c.finish_reason in ("stop", "length") for c in listed.choices)
    two = oai.chat.completions.create(model=target.model, messages=ASK, max_tokens=4, n=2, temperature=1.0)  # type: ignore[arg-type]
    assert sorted(c.index for c in two.choices) == [0, 1]
    assert all(c.finish_reason in ("stop", "length") for c in two.choices)


def test_an_unknown_field_is_a_400_naming_it_and_a_neutral_one_is_accepted(target: Target) -> None:
    body = {"model": target.model, "messages": ASK, "max_tokens": 2}
    with target.http() as c:
        refused = c.post("/v1/chat/completions", json={**body, "frobnicate": 1})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "frobnicate"
        assert (
            c.post("/v1/chat/completions", json={**body, "metadata": {}, "store": False}).status_code == 200
        )


def test_a_wrong_key_is_a_401(target: Target) -> None:
    with target.http("nc-not-a-key-of-this-server") as c:
        assert c.get("/v1/models").status_code == 401


def test_an_idempotency_key_replays_its_answer(target: Target) -> None:
    body = {"model": target.model, "messages": ASK, "max_tokens": 3}
    with target.http() as c:
        first = c.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": "check-1"})
        again = c.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": "check-1"})
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]


def test_a_session_bills_from_start_to_stop(target: Target) -> None:
    with (
        NCompass(api_key=KEY, base_url=target.base_url) as client,
        client.session(idle_timeout=60) as session,
    ):
        assert session.status == "active"
        client.chat.completions.create(model=target.model, messages=ASK, max_tokens=2)  # type: ignore[arg-type]
    with NCompass(api_key=KEY, base_url=target.base_url) as client:
        done = client.sessions.retrieve(session.id)
    assert done.status == "stopped" and done.requests == 1 and done.billed_seconds >= 0


def test_the_0_0_x_api_answers(target: Target) -> None:
    with nCompass(api_key=KEY, base_url=target.base_url) as legacy:
        legacy.start_session()
        try:
            # A prompt of its own: llama-cpp-python's server answers a prompt it has just answered with no
            # token, which the 0.0.x `min_tokens: 1` turns into an error through a gateway.
            said = [{"role": "user", "content": "Name a fruit."}]
            answer = legacy.complete_chat(messages=said, max_tokens=4, stream=False)
        finally:
            legacy.stop_session()
    assert isinstance(answer, str)
    with NCompass(api_key=KEY, base_url=target.base_url) as client:
        assert client.sessions.list(status="active") == []
