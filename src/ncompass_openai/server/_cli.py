"""``serve(settings)`` (blocking) and the ``python -m ncompass_openai.server`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn

from ._app import create_app
from ._local import bind_socket
from ._settings import ServerSettings

__all__ = ["build_parser", "main", "serve", "settings_from_args"]


def _client_host(host: str) -> str:
    # A wildcard address is where the server listens, not an address a client can dial.
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def serve(settings: ServerSettings | None = None, *, echo: Callable[[str], Any] | None = None) -> None:
    """Run the server in the foreground until interrupted (Ctrl-C).

    Prints where it listens (the chosen port when ``port=0``) and, when it had to generate an API key,
    that key once with the two ``export`` lines a client needs; only the key's hash is stored.

    Args:
        settings: The server's settings (default: from ``NCOMPASS_SERVER_*`` environment variables).
        echo: Where the banner lines go (default: ``print`` to stdout, flushed).
    """
    settings = settings or ServerSettings()
    say = echo or (lambda line: print(line, flush=True))
    app = create_app(settings)
    sock = bind_socket(settings.host, settings.port)
    port = int(sock.getsockname()[1])
    host = _client_host(settings.host)
    display_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{display_host}:{port}/v1"
    state = app.state.server
    model = state.runtime.model_id
    say(f"nCompass local server listening on {base_url} (engine: {settings.engine}, model: {model})")
    say(f"Ledger: {settings.db_path()}")
    generated = state.extra.pop("generated_api_key", None)
    if generated:
        say("A new API key was generated. It is shown only this once (the server keeps only its hash):")
        say(f"export NCOMPASS_BASE_URL={base_url}")
        say(f"export NCOMPASS_API_KEY={generated}")
    else:
        count = len(state.tenants.tenants)
        origin = "given" if settings.api_keys else "already in the ledger"
        say(f"Serving {count} API key(s) {origin}.")
        say(f"export NCOMPASS_BASE_URL={base_url}")
    config = uvicorn.Config(app, log_level=settings.log_level, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ncompass_openai.server",
        description="Run the local nCompass server (PROTOCOL.md) with a small real model or a synthetic one.",
    )
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000; 0 picks a free one and prints it)")
    parser.add_argument("--engine", choices=["llama", "synthetic"], help="model engine (default llama)")
    parser.add_argument("--model", help="GGUF file for the llama engine (default: bundled SmolLM2-135M)")
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        help="an API key; repeat for more tenants (default: keys in the ledger, or a new generated one)",
    )
    parser.add_argument("--db", help="SQLite ledger file, or :memory: (default: the user's data directory)")
    parser.add_argument(
        "--idle-shutdown", type=float, help="seconds without inference before the model stops (7200)"
    )
    parser.add_argument("--cold-start", type=float, help="extra seconds added to every model start (0)")
    parser.add_argument("--threads", type=int, help="CPU threads for the engine (default: all cores)")
    parser.add_argument(
        "--no-autostart",
        dest="autostart",
        action="store_false",
        default=None,
        help="do not start the model at boot",
    )
    parser.add_argument("--max-queue-per-key", type=int, help="requests one key may have in flight (8)")
    parser.add_argument("--max-body-bytes", type=int, help="largest request body accepted (4 MiB)")
    parser.add_argument(
        "--log-level", choices=["critical", "error", "warning", "info", "debug"], help="(info)"
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Settings from parsed flags; flags not given fall back to the environment, then the defaults."""
    given = {name: value for name, value in vars(args).items() if value is not None}
    return ServerSettings(**given)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ncompass_openai.server``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"error: invalid setting: {exc}", file=sys.stderr)
        return 2
    try:
        serve(settings)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
