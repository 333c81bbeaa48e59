"""``python -m ncompass_openai.server``: run the local nCompass server."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
