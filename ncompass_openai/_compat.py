"""The one place that knows which openai major version is installed.

openai 2.x is built on ``httpx``; openai 3.x on ``httpx2``, a fork with the same API under another
module name. Everything in this package that needs the HTTP library imports it from here, so the
rest of the code is written once for both.
"""

from __future__ import annotations

import openai

__all__ = ["HTTPX_DEFAULT_TIMEOUT", "OPENAI_MAJOR", "httpx"]

OPENAI_MAJOR: int = int(openai.__version__.split(".", 1)[0])

if OPENAI_MAJOR >= 3:
    import httpx2 as httpx
else:  # pragma: no cover - exercised by the openai 2.x CI job
    import httpx  # type: ignore[no-redef]

HTTPX_DEFAULT_TIMEOUT = httpx.Timeout(5.0)
"""The timeout an ``http_client`` built without one has: openai keeps any other as the client's own."""
