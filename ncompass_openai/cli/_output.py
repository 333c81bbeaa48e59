"""What commands print: JSON on stdout, tables, times and durations; Rich is imported only when used."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["format_duration", "format_time", "print_json", "print_table", "stderr_console", "stdout_console"]


def _to_data(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_to_data(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_data(item) for key, item in value.items()}
    return value


def print_json(value: Any) -> None:
    """Print a model, a list of models or plain data as JSON on stdout (for ``--json``)."""
    sys.stdout.write(json.dumps(_to_data(value), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Sequence[str] = (),
    footer: Sequence[str] | None = None,
    wrap: Sequence[str] = (),
) -> None:
    """A Rich table on stdout; columns named in ``right`` are right aligned (numbers).

    Cells do not wrap (ids are copied into the next command), except in ``wrap`` columns (free text).
    """
    from rich import box
    from rich.table import Table

    # Compact (no outer edge, shared padding) so that a table of ids fits an 80-column terminal.
    table = Table(
        title=title,
        show_footer=footer is not None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, name in enumerate(columns):
        table.add_column(
            name,
            justify="right" if name in right else "left",
            no_wrap=name not in wrap,
            overflow="fold" if name in wrap else "ellipsis",
            footer=footer[i] if footer is not None else "",
        )
    for row in rows:
        table.add_row(*row)
    stdout_console().print(table)


def format_time(timestamp: float | None, *, short: bool = False) -> str:
    """A unix time as local ``YYYY-MM-DD HH:MM:SS``; ``-``: none.

    ``short`` (in tables): ``MM-DD HH:MM``, with the year in front when it is not the current one.
    """
    if timestamp is None:
        return "-"
    moment = datetime.fromtimestamp(timestamp).astimezone()
    if not short:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    same_year = moment.year == datetime.now().astimezone().year
    return moment.strftime("%m-%d %H:%M" if same_year else "%Y-%m-%d %H:%M")


def format_duration(seconds: float | None) -> str:
    """``42.0 s``, ``3 min 05 s``, ``2 h 01 min``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
