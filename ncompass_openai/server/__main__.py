"""``python -m ncompass_openai.server``: the same command as ``ncompass serve``, with the same flags."""

from __future__ import annotations

import typer

from ..cli._local import ServeCommand, serve

if __name__ == "__main__":
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(cls=ServeCommand)(serve)
    app()
