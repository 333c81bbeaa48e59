"""The ``ncompass`` command line (``ncompass --help``) and the 0.0.x ``nccli-*`` commands."""

from __future__ import annotations

import sys

__all__ = ["main"]

# The options of `ncompass` itself, and the commands that have an option of the same name.
_ROOT_OPTIONS = {"--api-key": "NCOMPASS_API_KEY", "--base-url": "NCOMPASS_BASE_URL"}
_OWN_OPTIONS = {"serve": {"--api-key"}}


def _misplaced(args: list[str]) -> str | None:
    """A root option given after the command (``ncompass model status --api-key K``), else ``None``."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 1 if "=" in args[i] or args[i] not in _ROOT_OPTIONS else 2  # a root option's value
    if i >= len(args):
        return None
    command, rest = args[i], args[i + 1 :]
    for arg in rest[: rest.index("--")] if "--" in rest else rest:
        name = arg.split("=", 1)[0]
        if name in _ROOT_OPTIONS and name not in _OWN_OPTIONS.get(command, ()):
            return name
    return None


def main() -> None:
    """Run the ``ncompass`` command."""
    option = _misplaced(sys.argv[1:])
    if option is not None:
        sys.stderr.write(
            f"Error: {option} is an option of `ncompass` itself: put it before the command "
            f"(`ncompass {option} ... COMMAND`), or set {_ROOT_OPTIONS[option]}.\n"
        )
        raise SystemExit(2)
    from ._app import app

    app()
