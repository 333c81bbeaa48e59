"""Times as the protocol takes them, read one way on both sides of the wire (the protocol, "Bookings").

One rule for a time without an offset: the client and the CLI read it as the caller's local time (as
``datetime.timestamp()`` does) and send unix seconds; the server refuses an ISO 8601 string without an
offset, naming the fix, since it cannot know the caller's zone. Everything else is read alike: unix
seconds (a number, or a string of one), ISO 8601 with an offset or ``Z``; the client also takes a
``datetime`` and ``+30m`` / ``+2h`` / ``+1d`` from now. A number above ``1e11`` (year 5138) is unix
milliseconds by mistake and refused.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Literal

__all__ = ["TimeLike", "to_unix"]

TimeLike = datetime | float | int | str
"""A datetime (naive: local time), unix seconds, ISO 8601, or ``+30m`` / ``+2h`` / ``+1d`` from now."""

_MAX_UNIX = 1e11
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FORMS = "unix seconds, ISO 8601 (2026-01-31T09:00:00+00:00) or a time from now such as +30m, +2h, +1d"


def to_unix(
    value: object,
    name: str,
    *,
    naive: Literal["local", "refuse"] = "local",
    now: float | None = None,
) -> float:
    """Unix seconds from what a caller gave for the time ``name``.

    Args:
        value: A ``datetime``, a number of seconds, or a string (ISO 8601, unix seconds, ``+2h``).
        name: The field, for the error message.
        naive: ``"local"`` reads a time without an offset as local time (the client and the CLI);
            ``"refuse"`` refuses it (the server), and then relative times are refused as well.
        now: The reference for relative times (default: the current time).

    Raises:
        ValueError: the value is none of the accepted forms; the message names the field and the forms.
        TypeError: the value is neither a datetime, a number nor a string.
    """
    if isinstance(value, str):
        value = _from_text(value.strip(), name, naive=naive, now=now)
    if isinstance(value, datetime):
        if value.tzinfo is None and naive == "refuse":
            raise ValueError(_no_offset(name, value.isoformat()))
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a datetime or a unix time in seconds, got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a unix time in seconds (>= 0), got {value!r}.")
    if value > _MAX_UNIX:
        raise ValueError(f"{name}={value!r} looks like milliseconds: pass a unix time in seconds.")
    return float(value)


def _from_text(text: str, name: str, *, naive: str, now: float | None) -> datetime | float:
    if naive == "local" and text.startswith("+") and len(text) > 2 and text[-1] in _UNITS:
        try:
            return (time.time() if now is None else now) + float(text[1:-1]) * _UNITS[text[-1]]
        except ValueError:
            pass
    else:
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None and naive == "refuse":
                raise ValueError(_no_offset(name, text))
            return moment
    forms = _FORMS if naive == "local" else "unix seconds or ISO 8601 with an offset (2026-01-31T09:00:00Z)"
    raise ValueError(f"{name} is not a time: {text!r}. Give {forms}.")


def _no_offset(name: str, text: str) -> str:
    return (
        f"{name} has no UTC offset: {text!r}. The server cannot know your time zone: add one "
        f"('{text}Z' for UTC, or e.g. '+02:00') or send unix seconds."
    )
