"""``python -m ncompass_openai.server``: the same command as ``ncompass serve``, with the same flags."""

from __future__ import annotations

import typer

from ..cli._local import serve

if __name__ == "__main__":
    typer.run(serve)
