"""The server package's surface, and its polite failure without the ``server`` extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ncompass_openai.server as server_pkg
from ncompass_openai.server import LocalServer, ServerSettings, create_app


def test_public_surface() -> None:
    assert server_pkg.__all__ == sorted(server_pkg.__all__)
    assert set(server_pkg.__all__) == {"LocalServer", "ServerSettings", "create_app", "serve"}


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn"])
def test_import_without_the_extra_names_the_install_command(missing: str) -> None:
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "try:\n"
        "    import ncompass_openai.server\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("MissingDependencyError")
    assert "pip install 'ncompass-openai[server]'" in out


@pytest.mark.parametrize("args", [["serve", "--help"], ["serve", "--port", "0"], ["demo"]])
def test_the_cli_without_the_extra_says_one_line(args: list[str]) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from ncompass_openai.cli import main\n"
        f"sys.argv = ['ncompass', *{args!r}]\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: The local nCompass server needs extra packages: "
        "run `pip install 'ncompass-openai[server]'`.\n"
    )
    assert proc.stdout == ""


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCOMPASS_SERVER_API_KEYS", "k1, k2")
    monkeypatch.setenv("NCOMPASS_SERVER_IDLE_SHUTDOWN", "60")
    monkeypatch.setenv("NCOMPASS_SERVER_ENGINE", "synthetic")
    settings = ServerSettings(idle_shutdown=30)
    assert settings.api_keys == ["k1", "k2"]
    assert settings.idle_shutdown == 30  # arguments beat the environment
    assert settings.engine == "synthetic"
    assert "k1" not in repr(settings)  # keys never show in a repr
    monkeypatch.setenv("NCOMPASS_SERVER_API_KEYS", '["j1"]')
    assert ServerSettings().api_keys == ["j1"]


def test_upstream_features_may_be_comma_separated() -> None:
    # As the flag's help says: `--upstream-supports tools,logprobs` (a repeated flag gives a list).
    given = ["tools,logprobs", " vllm "]
    settings = ServerSettings(engine="openai", upstream=["http://127.0.0.1:9/v1"], upstream_supports=given)
    assert settings.upstream_supports == ["tools", "logprobs", "vllm"]
    with pytest.raises(ValueError, match="unknown feature 'toolz'"):
        ServerSettings(engine="openai", upstream=["http://127.0.0.1:9/v1"], upstream_supports=["tools,toolz"])


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="engine"):
        ServerSettings(engine="gpt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_shutdown"):
        ServerSettings(idle_shutdown=0)


def test_local_server_generates_a_key_and_reports_its_urls() -> None:
    with LocalServer(engine="synthetic") as srv:
        assert srv.base_url == srv.url + "/v1"
        assert srv.url.startswith("http://127.0.0.1:")
        (key,) = srv.api_keys
        assert key not in repr(srv)
        assert srv.app.state.server.tenants.tenants
    # Stopped: the port is released and the lifespan ran to its end.
    assert srv._thread is None


def test_create_app_keeps_state_per_app() -> None:
    one = create_app(ServerSettings(engine="synthetic", db=":memory:", api_keys=["a"]))
    two = create_app(ServerSettings(engine="synthetic", db=":memory:", api_keys=["b"]))
    assert one.state.server is not two.state.server
    assert one.state.server.db is not two.state.server.db
    one.state.server.db.close()
    two.state.server.db.close()


def test_structured_outputs_without_llguidance_name_the_install_command() -> None:
    code = (
        "import sys; sys.modules['llguidance'] = None\n"
        "from ncompass_openai.server.backends.local._grammar import json_schema_grammar\n"
        "try:\n"
        "    json_schema_grammar({'type': 'object'}, 'response_format')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc.param, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("InvalidRequest response_format")
    assert "pip install 'ncompass-openai[server]'" in out
