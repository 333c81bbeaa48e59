"""``ncompass serve`` (the local nCompass server) and ``ncompass demo`` (the 0.0.x hello world, offline)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any, Literal

import typer

from ._common import fail, format_duration, handle_errors, stderr_console, wait_for_model

__all__ = ["demo", "serve"]

Engine = Annotated[
    Literal["llama", "synthetic"] | None,
    typer.Option(
        help="llama (the real SmolLM2 model) or synthetic (fast deterministic tokens).", show_default=False
    ),
]


@handle_errors
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).", show_default=False)
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="TCP port; 0 picks a free one (default 8000).", min=0, max=65535, show_default=False
        ),
    ] = None,
    engine: Engine = None,
    model: Annotated[
        str | None,
        typer.Option(help="A GGUF file to serve (default: the bundled SmolLM2-135M).", show_default=False),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="A tenant key (repeatable). None: a new key is made and printed once. A key on the "
            "command line is visible to other users of the machine: prefer NCOMPASS_SERVER_API_KEYS.",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="SQLite ledger file, or :memory: (default: in the user's data directory).",
            show_default=False,
        ),
    ] = None,
    idle_shutdown: Annotated[
        float | None,
        typer.Option(
            help="Stop a model after this many seconds without inference (default 7200).", show_default=False
        ),
    ] = None,
    cold_start: Annotated[
        float | None,
        typer.Option(
            help="Extra seconds added to each model start, like a hosted cold start.", show_default=False
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads of the engine.", min=1, show_default=False)
    ] = None,
    autostart: Annotated[
        bool, typer.Option("--autostart/--no-autostart", help="Start the model at boot.", show_default=False)
    ] = True,
    max_queue_per_key: Annotated[
        int | None,
        typer.Option(
            help="Requests one key may have in flight before 429 (default 8).", min=1, show_default=False
        ),
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            help="Largest request body; a larger one answers 413 (default 4 MiB).", min=1, show_default=False
        ),
    ] = None,
    log_level: Annotated[
        Literal["critical", "error", "warning", "info", "debug"] | None,
        typer.Option(help="uvicorn's log level (default info).", show_default=False),
    ] = None,
) -> None:
    """Run the local nCompass server (every flag also reads NCOMPASS_SERVER_<FLAG>)."""
    given: dict[str, Any] = {
        "host": host,
        "port": port,
        "engine": engine,
        "model": model,
        "api_keys": api_key or None,
        "db": db,
        "idle_shutdown": idle_shutdown,
        "cold_start": cold_start,
        "threads": threads,
        "autostart": None if autostart else False,
        "max_queue_per_key": max_queue_per_key,
        "max_body_bytes": max_body_bytes,
        "log_level": log_level,
    }
    from ..server import ServerSettings
    from ..server import serve as run_server

    # Only the flags given on the command line: the rest stay with the environment and the defaults.
    settings = ServerSettings(**{name: value for name, value in given.items() if value is not None})
    try:
        run_server(settings)
    except OSError as exc:
        raise fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None


# The 0.0.x hello world's prompt. The newline matters for a completion (not a chat): after a bare "?" a
# small instruct model often ends the text at once, after "?\n" it goes on to answer.
_PROMPT = "Give me 5 tools I can use to accelerate inference of my ML model?\n"
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

    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.5, "top_p": 0.9}
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
