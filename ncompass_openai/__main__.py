"""``python -m ncompass_openai`` runs the ``ncompass`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
