"""LangChain's standard integration suite (langchain-tests) for ``ChatNCompass``, on the real model.

Every test runs against the local server with SmolLM2-135M (llama engine): tool calling, structured
output and JSON mode are declared supported, and the server enforces them by constrained decoding.

The sampling parameters are the suite's: greedy, with ``seed=0`` because without a seed a greedy answer
may differ with the state of the server's prompt cache (with one, the server decodes the whole prompt
and gives the same text again), ``max_tokens=128`` so no answer runs to the context limit, and
``frequency_penalty=0.5`` because without it the 135M model at temperature 0 repeats a phrase ("the cat
was a cat, and the cat was a cat, ...") until the token limit in most structured answers.

The tests marked ``xfail`` below fail on what the model writes, not on how it is carried: each reason
says what the model does instead. ``strict=True``: the day one passes, the mark must go.

The suite skips, by its own declarations, the tests of what this model and protocol do not have: image,
PDF and audio inputs (a text-only model: the server refuses them, test_chat_ncompass.py checks that),
Anthropic-format inputs, a second model to override to, and VCR cassettes (recorded HTTP replayed: the
tests here talk to a real server instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from ncompass_openai.langchain import ChatNCompass

pytestmark = [pytest.mark.model, pytest.mark.anyio]


class TestChatNCompassIntegration(ChatModelIntegrationTests):
    server_params: dict[str, Any]

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _real_model_server(cls, model_server: Any, api_key: str) -> Iterator[None]:
        cls.server_params = {"api_key": api_key, "base_url": str(model_server.base_url)}
        yield

    @property
    def chat_model_class(self) -> type[ChatNCompass]:
        return ChatNCompass

    @property
    def chat_model_params(self) -> dict[str, Any]:
        params = {"temperature": 0, "seed": 0, "max_tokens": 128, "frequency_penalty": 0.5}
        return {**self.server_params, **params}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        # An nCompass key serves one model: there is no other model to switch to per call. That a per-call
        # `model` reaches the server is test_chat_ncompass.py's test_a_model_override_reaches_the_server.
        return False

    @pytest.mark.xfail(
        strict=True,
        reason="JSON mode constrains the answer to one JSON object, not to its keys; SmolLM2-135M nests "
        "objects under `setup` instead of the two string keys `setup` and `punchline` that the prompt asks "
        "for (the same joke with a schema, test_structured_output, passes)",
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)
