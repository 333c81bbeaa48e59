"""The ``ncompass`` command line (``ncompass --help``) and the 0.0.x ``nccli-*`` commands."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Run the ``ncompass`` command."""
    from ._app import app

    app()
