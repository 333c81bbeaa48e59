"""``ncompass model ...`` (the model deployment) and ``ncompass book ...`` (keep-warm bookings)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from ._common import (
    FLAG,
    JsonOption,
    client_of,
    command_group,
    handle_errors,
    parse_time,
    wait_for_model,
)
from ._output import format_duration, format_time, print_json, print_table

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._client import NCompass
    from ..types import Booking, Deployment

__all__ = ["book_app", "model_app"]

model_app = command_group(
    "model", "The model deployment: start, stop, status, wait (a cold start takes minutes)."
)
book_app = command_group(
    "book", "Keep-warm bookings: the model is ready at a window's start and not idle-stopped inside it."
)

Timeout = Annotated[float, typer.Option(help="Seconds to wait for the model before giving up.", min=0)]


def describe_deployment(deployment: Deployment) -> str:
    """One line on where the deployment is in its lifecycle."""
    since = format_duration(max(0.0, time.time() - deployment.state_since))
    line = f"Model {deployment.model}: {deployment.state} (for {since})"
    if deployment.state == "starting" and deployment.estimated_ready_at is not None:
        line += f", ready at about {format_time(deployment.estimated_ready_at)}"
    if deployment.state == "running":
        line += f", idle shutdown after {format_duration(deployment.idle_shutdown)} without requests"
    if deployment.error:
        line += f". Error: {deployment.error}"
    return line + "."


def _show(deployment: Deployment, json_output: bool) -> None:
    if json_output:
        print_json(deployment)
    else:
        print(describe_deployment(deployment))


def _call(ctx: typer.Context, json_output: bool, call: Callable[[NCompass], Deployment]) -> Deployment:
    """``call`` with a client of the command's options, then the deployment it returns shown."""
    with client_of(ctx) as client:
        deployment = call(client)
    _show(deployment, json_output)
    return deployment


def _simple_command(name: str, doc: str, call: Callable[[NCompass], Deployment]) -> None:
    """``ncompass model <name>``: one call, its deployment shown (``--json``: as JSON)."""

    @handle_errors
    def command(ctx: typer.Context, json_output: JsonOption = False) -> None:
        _call(ctx, json_output, call)

    command.__doc__ = doc
    model_app.command(name)(command)


_simple_command("status", "Show the model deployment's state.", lambda client: client.deployment.status())
_simple_command(
    "stop", "Stop the model (it starts again with `ncompass model start`).", lambda c: c.deployment.stop()
)


@model_app.command("start")
@handle_errors
def start(
    ctx: typer.Context,
    wait: Annotated[
        bool, typer.Option("--wait", metavar=FLAG, help="Wait until the model is running.")
    ] = False,
    timeout: Timeout = 600.0,
    json_output: JsonOption = False,
) -> None:
    """Start the model (a cold start); returns at once unless --wait."""

    def start_and_wait(client: NCompass) -> Deployment:
        deployment = client.deployment.start()
        if wait and deployment.state != "running":
            deployment = wait_for_model(client, timeout=timeout, quiet=json_output)
        return deployment

    deployment = _call(ctx, json_output, start_and_wait)
    if not json_output and deployment.state == "starting":
        print("Follow it with `ncompass model wait` or `ncompass model status`.")


@model_app.command("wait")
@handle_errors
def wait(ctx: typer.Context, timeout: Timeout = 600.0, json_output: JsonOption = False) -> None:
    """Wait until the model is running, with a spinner, the elapsed time and the server's estimate."""
    with client_of(ctx) as client:
        deployment = wait_for_model(client, timeout=timeout, quiet=json_output)
    if json_output:
        print_json(deployment)


def _booking_rows(bookings: list[Booking]) -> list[list[str]]:
    return [
        [b.id, b.status, format_time(b.start_at, short=True), format_time(b.end_at, short=True), b.note]
        for b in bookings
    ]


@book_app.command("add")
@handle_errors
def add(
    ctx: typer.Context,
    start_at: Annotated[
        str,
        typer.Argument(
            metavar="START", help="Window start: unix time, ISO 8601 (local unless it has an offset) or +30m."
        ),
    ],
    end_at: Annotated[
        str, typer.Argument(metavar="END", help="Window end, in the same forms (+2h is from now).")
    ],
    note: Annotated[str, typer.Option(help="A note kept with the booking.")] = "",
    json_output: JsonOption = False,
) -> None:
    """Book a keep-warm window."""
    start_ts, end_ts = parse_time(start_at), parse_time(end_at)
    with client_of(ctx) as client:
        booking = client.deployment.bookings.create(start_at=start_ts, end_at=end_ts, note=note)
    if json_output:
        print_json(booking)
    else:
        print(
            f"Booked {booking.id}: the model is kept warm from {format_time(booking.start_at)} "
            f"to {format_time(booking.end_at)} ({booking.status})."
        )


@book_app.command("list")
@handle_errors
def list_(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List bookings, soonest first."""
    with client_of(ctx) as client:
        bookings = client.deployment.bookings.list()
    if json_output:
        print_json({"object": "list", "data": bookings})  # the API's list shape
    elif not bookings:
        print("No bookings. Add one with `ncompass book add START END`.")
    else:
        print_table(
            None, ["booking", "status", "start", "end", "note"], _booking_rows(bookings), wrap=["note"]
        )


@book_app.command("cancel")
@handle_errors
def cancel(
    ctx: typer.Context,
    booking_id: Annotated[str, typer.Argument(metavar="BOOKING_ID", help="Booking id (book_...).")],
    json_output: JsonOption = False,
) -> None:
    """Cancel a booking."""
    with client_of(ctx) as client:
        booking = client.deployment.bookings.cancel(booking_id)
    if json_output:
        print_json(booking)
    else:
        print(f"Booking {booking.id} is {booking.status}.")
