"""``ncompass complete`` and ``ncompass chat``: answers streamed to the terminal as they are generated."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._legacy_defaults import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from ._common import JsonOption, client_of, handle_errors
from ._output import print_json

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .._client import NCompass

__all__ = ["chat", "complete"]

MaxTokens = Annotated[int, typer.Option(help="Most tokens to generate.", min=1)]
Temperature = Annotated[float, typer.Option(help="Sampling temperature, 0 to 2.", min=0.0, max=2.0)]


def _top_p(value: float) -> float:
    # (0, 1]: Typer's ranges are closed, and would show 0 as allowed.
    if not 0.0 < value <= 1.0:
        raise typer.BadParameter(f"{value:g} is not in (0, 1]: above 0, at most 1 (1 = no nucleus cut).")
    return value


TopP = Annotated[float, typer.Option(help="Nucleus sampling mass: above 0, at most 1.", callback=_top_p)]
Model = Annotated[
    str | None,
    typer.Option(help="Model id (default: NCOMPASS_MODEL, else the key's model).", show_default=False),
]


def _params(max_tokens: int, temperature: float, top_p: float, model: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    if model is not None:
        params["model"] = model
    return params


def _read_text(value: str | None, what: str) -> str:
    # "-" (or nothing, with a pipe on stdin) reads the text from stdin, so prompts can come from files.
    if value is None or value == "-":
        if value is None and sys.stdin.isatty():
            raise ValueError(f"give the {what} as an argument, or pipe it on stdin with `-`.")
        value = sys.stdin.read()
    if not value.strip():
        raise ValueError(f"the {what} is empty: give some text.")
    return value


def _stream(pieces: Iterator[str]) -> str:
    """Write each piece as it arrives; return the whole text."""
    out = sys.stdout
    text: list[str] = []
    try:
        for piece in pieces:
            out.write(piece)
            out.flush()
            text.append(piece)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # an interrupted stream must not leave its connection open
        out.write("\n")
        out.flush()
    return "".join(text)


@handle_errors
def complete(
    ctx: typer.Context,
    prompt: Annotated[
        str | None,
        typer.Argument(metavar="PROMPT", help="The prompt; `-` reads it from stdin.", show_default=False),
    ] = None,
    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS,
    temperature: Temperature = DEFAULT_TEMPERATURE,
    top_p: TopP = DEFAULT_TOP_P,
    model: Model = None,
    json_output: JsonOption = False,
) -> None:
    """Complete a prompt, streaming the text to the terminal (--json: the whole response object)."""
    text = _read_text(prompt, "prompt")
    params = _params(max_tokens, temperature, top_p, model)
    with client_of(ctx) as client:
        if json_output:
            print_json(client.completions.create(prompt=text, **params))
        elif not _stream(client.complete_prompt(text, stream=True, **params)).strip():
            sys.stderr.write(
                "(The model ended the text at once. A completion continues the prompt: end it where an "
                "answer would start, e.g. with a newline, or ask with `ncompass chat`.)\n"
            )


def _chat_once(client: NCompass, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    return _stream(client.complete_chat(messages, add_generation_prompt=True, stream=True, **params))


@handle_errors
def chat(
    ctx: typer.Context,
    message: Annotated[
        str | None,
        typer.Argument(
            metavar="MESSAGE",
            help="The user message; `-` reads it from stdin. Without it, on a terminal: an interactive chat.",
            show_default=False,
        ),
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system message.", show_default=False)] = None,
    model: Model = None,
    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS,
    temperature: Temperature = DEFAULT_TEMPERATURE,
    top_p: TopP = DEFAULT_TOP_P,
    json_output: JsonOption = False,
) -> None:
    """Chat with the model, the answer streamed to the terminal (--json: the whole response object)."""
    params = _params(max_tokens, temperature, top_p, model)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    interactive = message is None and sys.stdin.isatty() and not json_output
    with client_of(ctx) as client:
        if not interactive:
            messages.append({"role": "user", "content": _read_text(message, "message")})
            if json_output:
                print_json(client.chat.completions.create(messages=messages, **params))
            else:
                _chat_once(client, messages, params)
            return
        from rich.console import Console

        console = Console(highlight=False)
        console.print("Chat with the model: an empty line, `exit` or Ctrl-D ends it.", style="dim")
        while True:
            try:
                line = console.input("[bold]you>[/bold] ")
            except EOFError:
                console.print()
                break
            if line.strip() in ("", "exit", "quit"):
                break
            messages.append({"role": "user", "content": line})
            console.print("[bold]model>[/bold] ", end="")
            messages.append({"role": "assistant", "content": _chat_once(client, messages, params)})
