"""The ``ncompass`` command: a thin Typer app whose commands delegate to the client and the server.

Only Typer is imported up front; openai, the client, Rich and the server are imported inside the
commands that use them, so ``ncompass --help`` answers quickly.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .._version import __version__
from ._batch import batch_app
from ._common import FLAG, ClientOptions, register_secret
from ._deployment import book_app, model_app
from ._generate import chat, complete
from ._local import ServeCommand, demo, serve
from ._sessions import session_app, usage

__all__ = ["app"]

app = typer.Typer(
    name="ncompass",
    help="nCompass from the command line: sessions, the model deployment, bookings, completions, "
    "and a local nCompass server. The key comes from NCOMPASS_API_KEY (or --api-key), the API from "
    "NCOMPASS_BASE_URL (or --base-url).",
    no_args_is_help=True,
    add_completion=False,
    # Errors a user can fix are turned into one line by each command; anything else is a bug and keeps
    # Python's plain traceback (Typer's pretty one would print local variables, keys included).
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"ncompass-openai {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="API key (default: NCOMPASS_API_KEY). A key on the command line is visible to other "
            "users of the machine: prefer the environment variable.",
            show_default=False,
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="API base URL (default: NCOMPASS_BASE_URL, else https://api.ncompass.tech/v1).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", metavar=FLAG, callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """nCompass from the command line."""
    register_secret(api_key)
    ctx.obj = ClientOptions(api_key=api_key, base_url=base_url)


_ACCOUNT = "Sessions, model and bookings"
_GENERATE = "Generate"
_LOCAL = "Local server"
app.add_typer(session_app, rich_help_panel=_ACCOUNT)
app.add_typer(model_app, rich_help_panel=_ACCOUNT)
app.add_typer(book_app, rich_help_panel=_ACCOUNT)
app.command("usage", rich_help_panel=_ACCOUNT)(usage)
app.command("complete", rich_help_panel=_GENERATE)(complete)
app.command("chat", rich_help_panel=_GENERATE)(chat)
app.add_typer(batch_app, rich_help_panel=_GENERATE)
app.command("serve", cls=ServeCommand, rich_help_panel=_LOCAL)(serve)
app.command("demo", rich_help_panel=_LOCAL)(demo)
