"""One rule for a time without an offset, on both sides of the wire and in the CLI (``_time.py``).

The client and the CLI read it as local time and send unix seconds; the server refuses it. These tests
run under a time zone other than UTC (``TZ=IST-5:30``, a POSIX rule that needs no tz database), or they
could not fail on a machine whose local time is UTC.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from ncompass_openai._compat import httpx
from ncompass_openai._time import to_unix
from ncompass_openai.cli._common import parse_time
from ncompass_openai.server import LocalServer

NAIVE = "2031-01-31T09:00:00"
AS_LOCAL = datetime(2031, 1, 31, 3, 30, tzinfo=timezone.utc).timestamp()  # 09:00 at UTC+05:30
AS_UTC = datetime(2031, 1, 31, 9, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_zone_really_is_not_utc(india_time: None) -> None:
    assert time.timezone == -(5 * 3600 + 1800)


@pytest.mark.parametrize("value", [NAIVE, datetime(2031, 1, 31, 9, 0)])
def test_the_client_reads_a_time_without_offset_as_local_time(india_time: None, value: object) -> None:
    assert to_unix(value, "start_at") == AS_LOCAL != AS_UTC


def test_the_cli_reads_it_as_local_time_too(india_time: None) -> None:
    assert parse_time(NAIVE) == AS_LOCAL
    assert parse_time(NAIVE + "Z") == AS_UTC
    assert parse_time("+1h", now=1000.0) == 4600.0


@pytest.mark.parametrize("value", ["2031-01-31T09:00:00Z", "2031-01-31T14:30:00+05:30", str(AS_UTC), AS_UTC])
def test_times_with_an_offset_or_unix_seconds_read_alike_everywhere(india_time: None, value: object) -> None:
    assert to_unix(value, "start_at") == AS_UTC
    assert to_unix(value, "start_at", naive="refuse") == AS_UTC


@pytest.mark.parametrize("value", [NAIVE, datetime(2031, 1, 31, 9, 0), "+1h"])
def test_the_server_side_refuses_what_needs_the_callers_zone(value: object) -> None:
    with pytest.raises(ValueError, match="start_at"):
        to_unix(value, "start_at", naive="refuse")


@pytest.mark.parametrize("value", [1.7e12, -1.0, float("inf"), "soon"])
def test_impossible_times_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="start_at"):
        to_unix(value, "start_at")


def test_the_server_answers_400_naming_the_fix(india_time: None) -> None:
    key = "nc-test-time-key"
    with (
        LocalServer(engine="synthetic", api_keys=[key], db=":memory:") as srv,
        httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}) as http,
    ):
        refused = http.post("/v1/deployment/bookings", json={"start_at": NAIVE, "end_at": NAIVE + "Z"})
        accepted = http.post("/v1/deployment/bookings", json={"start_at": NAIVE + "Z", "end_at": AS_UTC + 60})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "start_at"
    assert "no UTC offset" in error["message"] and "unix seconds" in error["message"]
    assert accepted.status_code == 201 and accepted.json()["start_at"] == AS_UTC
