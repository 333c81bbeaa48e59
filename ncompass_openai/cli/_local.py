"""``ncompass serve`` (the local nCompass server) and ``ncompass demo`` (the 0.0.x hello world, offline)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperCommand

from .._legacy_defaults import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from ._common import fail, handle_errors, wait_for_model
from ._output import format_duration, stderr_console

__all__ = ["ServeCommand", "demo", "serve"]

Engine = Annotated[
    Literal["llama", "synthetic"] | None,
    typer.Option(
        help="llama (the real SmolLM2 model) or synthetic (fast deterministic tokens).", show_default=False
    ),
]


class ServeCommand(TyperCommand):
    """``ncompass serve``: its flags are made from ``ServerSettings``' fields when first needed.

    Built lazily, so ``ncompass --help`` (which lists only this command's name and help) imports
    neither pydantic nor the server.
    """

    _built: TyperCommand | None = None

    def _command(self) -> TyperCommand:
        if self._built is None:
            from .._exceptions import MissingDependencyError

            try:
                from ..server._settings import ServerSettings
            except MissingDependencyError as exc:  # while parsing the flags: one line, not a traceback
                raise fail(str(exc)) from None
            from ._settings_flags import command_from_settings

            function = command_from_settings(ServerSettings, _serve, names=_FLAG_NAMES, doc=self.help or "")
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            single.command(self.name)(function)
            built = typer.main.get_command(single)
            assert isinstance(built, TyperCommand)
            self._built = built
        return self._built

    def get_params(self, ctx: Any) -> list[Any]:
        self.params = self._command().params
        return super().get_params(ctx)

    def invoke(self, ctx: Any) -> Any:
        return self._command().invoke(ctx)


def serve() -> None:
    """Run the local nCompass server (every flag also reads NCOMPASS_SERVER_<FLAG>)."""
    # Typer only names the command: its flags and its work are ServeCommand's.


_FLAG_NAMES = {"api_keys": "api-key"}


@handle_errors
def _serve(given: dict[str, Any]) -> None:
    """Run the server with the flags given (the rest stay with the environment and the defaults)."""
    from pydantic import ValidationError

    from ..server import ServerSettings
    from ..server import serve as run_server
    from ..server._exceptions import ModelLoadError
    from ._settings_flags import flag_error

    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        raise fail(flag_error(exc, _FLAG_NAMES), code=2) from None
    if settings.engine == "llama" and settings.model and not Path(settings.model).expanduser().is_file():
        # A configuration that can never work fails now, not as a `failed` deployment later.
        raise fail(
            f"--model {settings.model}: no such file. Give the path of a GGUF file, or leave --model out "
            "to serve the bundled SmolLM2-135M."
        )
    try:
        run_server(settings)
    except ModelLoadError as exc:
        raise fail(
            f"{str(exc).rstrip('.')}. Check --model (a GGUF file llama.cpp can read), or leave it out to "
            "serve the bundled SmolLM2-135M."
        ) from None
    except OSError as exc:
        raise fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None


# The 0.0.x hello world's prompt, as the seed's examples send it (the 0.0.x methods' `min_tokens: 1` keeps
# the small instruct model from ending the text at once after the bare "?").
_PROMPT = "Give me 5 tools I can use to accelerate inference of my ML model?"
_CHAT = [
    {"role": "assistant", "content": "Hello, how can I speed up your ML inference today?"},
    {"role": "user", "content": "What tweaks can I make to my model to make it faster?"},
]
_BATCH = ["What is a GPU?\n", "What is quantization?\n"]


@handle_errors
def demo(
    engine: Engine = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.", min=1)] = 80,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the model to load.", min=1)] = 600.0,
) -> None:
    """Start the local server with the real model in this process and run the 0.0.x hello world."""
    started = time.perf_counter()
    console = stderr_console()
    from .._client import NCompass
    from ..server import LocalServer

    params: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": DEFAULT_TEMPERATURE,
        "top_p": DEFAULT_TOP_P,
    }
    console.rule("ncompass demo: the 0.0.x hello world against a local nCompass server")
    # wait_for_model=False: the model loads while the session starts, and the spinner shows the wait.
    with LocalServer(
        engine=engine or "llama", db=":memory:", log_level="warning", wait_for_model=False
    ) as server:
        console.print(f"Local server listening at {server.base_url} (engine: {engine or 'llama'}).")
        with NCompass(api_key=server.api_keys[0], base_url=server.base_url) as client:
            session = client.sessions.start()
            console.print(f"1. Session {session.id} started: billing runs from now until it is stopped.")
            try:
                console.print("2. Waiting for the model.")
                wait_for_model(client, timeout=timeout)
                console.print(f"3. A streamed completion. Prompt: {_PROMPT.strip()}", style="bold")
                client.print_prompt(client.complete_prompt(_PROMPT, stream=True, **params))
                console.print(f"4. A streamed chat. Last user message: {_CHAT[-1]['content']}", style="bold")
                client.print_prompt(
                    client.complete_chat(_CHAT, add_generation_prompt=True, stream=True, **params)
                )
                console.print(
                    f"5. A batch of {len(_BATCH)} prompts in one request (stream=False).", style="bold"
                )
                answers = client.complete_prompt(_BATCH, stream=False, **params)
                for prompt, answer in zip(_BATCH, answers, strict=True):
                    sys.stdout.write(f"[{prompt.strip()}] {str(answer).strip()}\n")
                sys.stdout.flush()
            finally:
                # Stop even on Ctrl-C or an error: an open session keeps billing.
                stopped = client.sessions.stop(session.id)
        usage = stopped.usage
        console.print(
            f"6. Session {stopped.id} stopped: billed {format_duration(stopped.billed_seconds)} "
            f"({stopped.requests} requests, {usage.prompt_tokens} prompt and {usage.completion_tokens} "
            "completion tokens; billing is by time, not by token)."
        )
    console.print(
        f"Done in {format_duration(time.perf_counter() - started)}. Next: run `ncompass serve` and point "
        "NCOMPASS_BASE_URL and NCOMPASS_API_KEY at it."
    )
