"""``serve(settings)``: the server in the foreground (``ncompass serve``, ``python -m …server``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn

from .._exceptions import ModelLoadError
from .._settings import ServerSettings
from ._app import create_app
from ._local import bind_socket

__all__ = ["serve"]


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
    failures: list[str] = []

    def boot_failed(error: str) -> None:
        # A configuration that can never work (the model file does not load) ends the server at once.
        failures.append(error)
        server.should_exit = True

    app = create_app(settings, on_boot_failure=boot_failed if settings.autostart else None)
    sock = bind_socket(settings.host, settings.port)
    port = int(sock.getsockname()[1])
    host = _client_host(settings.host)
    display_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{display_host}:{port}/v1"
    state = app.state.server
    model = state.backend.model_id
    say(f"nCompass local server listening on {base_url} (engine: {settings.engine}, model: {model})")
    say(f"Ledger: {settings.db_path()}")
    generated = state.extra.pop("generated_api_key", None)
    if generated:
        say("A new API key was generated. It is shown only this once (the server keeps only its hash):")
        say(f"export NCOMPASS_BASE_URL={base_url}")
        say(f"export NCOMPASS_API_KEY={generated}")
    else:
        count = len(state.tenants.tenants)
        if settings.api_keys:
            say(f"Serving {count} API key(s) given.")
        else:
            # Only hashes are stored: a key not written down cannot be shown again.
            say(
                f"Serving {count} API key(s) already in the ledger {settings.db_path()} (only their "
                "hashes are kept). Lost the key? Set one with --api-key (or NCOMPASS_SERVER_API_KEYS), "
                "which replaces the ledger's, or start on a fresh --db."
            )
        say(f"export NCOMPASS_BASE_URL={base_url}")
    config = uvicorn.Config(app, log_level=settings.log_level, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failures:
        raise ModelLoadError(f"The model failed to load at boot: {failures[0]}")
