"""LangChain's standard unit suite (langchain-tests) for ``ChatNCompass``, with sockets disabled.

``pytest-socket`` blocks every socket but the event loop's own (``--allow-unix-socket`` in the
pyproject): the suite proves that constructing, binding and serialising the model does no network I/O.
The serialisation snapshot is ``__snapshots__/test_standard_unit.ambr`` (``--snapshot-update`` rewrites it).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_socket
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumpd, load
from langchain_tests.unit_tests import ChatModelUnitTests
from syrupy.assertion import SnapshotAssertion

from ncompass_openai.langchain import ChatNCompass

pytestmark = pytest.mark.disable_socket

_PARAMS = {"api_key": "nc-unit-test-key", "base_url": "http://127.0.0.1:9/v1", "model": "smollm2-135m"}


class TestChatNCompassUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatNCompass]:
        return ChatNCompass

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return dict(_PARAMS)

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {
                "NCOMPASS_API_KEY": "nc-from-env",
                "NCOMPASS_BASE_URL": "https://ncompass.example/v1",
                "NCOMPASS_MODEL": "model-from-env",
            },
            {},
            {
                "ncompass_api_key": "nc-from-env",
                "ncompass_api_base": "https://ncompass.example/v1",
                "model_name": "model-from-env",
            },
        )

    @pytest.mark.xfail(
        strict=True,
        raises=ValueError,
        reason="langchain-core's load(allowed_objects='all') admits only the classes in its own mapping "
        "(langchain_core.load.mapping), which lists LangChain's partner packages and no other; the same "
        "round trip with allowed_objects=[ChatNCompass], the way LangChain documents for any other class, "
        "is test_serdes_with_the_class_allowed below",
    )
    def test_serdes(self, model: BaseChatModel, snapshot: SnapshotAssertion) -> None:
        super().test_serdes(model, snapshot)


@pytest.mark.filterwarnings("ignore:The function `load` is in beta")
def test_serdes_with_the_class_allowed(snapshot: SnapshotAssertion, monkeypatch: pytest.MonkeyPatch) -> None:
    env, _, _ = TestChatNCompassUnit().init_from_env_params
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    model = ChatNCompass(**_PARAMS, max_tokens=32, temperature=0)
    serialized = dumpd(model)
    assert serialized == snapshot(name="serialized")
    assert "nc-unit-test-key" not in str(serialized)
    restored = load(
        serialized,
        valid_namespaces=["ncompass_openai"],
        allowed_objects=[ChatNCompass],
        secrets_from_env=True,
    )
    assert isinstance(restored, ChatNCompass)
    assert (
        restored.model_dump()
        == ChatNCompass(**{**_PARAMS, "api_key": "nc-from-env"}, max_tokens=32, temperature=0).model_dump()
    )


def test_sockets_are_disabled_here() -> None:
    with pytest.raises(pytest_socket.SocketBlockedError), pytest.warns(UserWarning, match="socket"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
