"""The wording people read: short ids, relative times, durations and state lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.display import (
    duration_text,
    relative_time,
    run_duration,
    short_id,
    state_detail,
    state_text,
    time_and_distance,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("offset", "expected"), [
    (timedelta(0), "now"),
    (timedelta(seconds=30), "in 30 seconds"),
    (timedelta(minutes=5), "in 5 minutes"),
    (-timedelta(minutes=1), "1 minute ago"),
    (-timedelta(hours=2), "2 hours ago"),
    (timedelta(days=3), "in 3 days"),
    (-timedelta(days=90), "3 months ago"),
    (timedelta(days=3650), "in 10 years"),
])
def test_relative_time_reads_like_speech(offset: timedelta, expected: str) -> None:
    assert relative_time(NOW + offset, NOW) == expected
    assert relative_time((NOW + offset).isoformat(), NOW) == expected


def test_relative_time_of_nothing_or_of_text_that_is_no_time() -> None:
    assert relative_time(None, NOW) is None
    assert relative_time("soon", NOW) == "soon"


def test_time_and_distance_keeps_the_absolute_time() -> None:
    assert time_and_distance("2026-06-01T12:10:00Z", NOW) == \
        "2026-06-01 12:10:00 UTC (in 10 minutes)"
    assert time_and_distance("2026-06-01T14:00:00+02:00", NOW) == "2026-06-01 12:00:00 UTC (now)"


@pytest.mark.parametrize(("seconds", "expected"), [
    (0.42, "0.4s"), (12, "12s"), (245, "4m 05s"), (3720, "1h 02m"), (273600, "3d 04h"),
    (-3, "0.0s"), (None, None)])
def test_durations(seconds: float | None, expected: str | None) -> None:
    assert duration_text(seconds) == expected


def test_run_duration_runs_on_until_the_run_ends() -> None:
    started = (NOW - timedelta(minutes=4, seconds=5)).isoformat()
    assert run_duration(started, None, NOW) == "4m 05s"
    assert run_duration(started, (NOW - timedelta(minutes=4)).isoformat(), NOW) == "5.0s"
    assert run_duration(None, None, NOW) is None


def test_short_id_is_the_first_eight_characters() -> None:
    assert short_id("3f2a1b9c-0000-4000-8000-000000000000") == "3f2a1b9c"
    assert short_id(None) is None


@pytest.mark.parametrize(("state", "message", "expected"), [
    ("CANCELLED", "cancelled", "CANCELLED"),
    ("CANCELLED", "cancelled: cancelled", "CANCELLED"),
    ("CANCELLED", "Cancelled: the task was stopped", "CANCELLED: the task was stopped"),
    ("FAILED", "exited with code 3", "FAILED: exited with code 3"),
    ("RUNNING", None, "RUNNING"),
    ("COMPLETED", "  ", "COMPLETED"),
])
def test_a_state_line_never_repeats_the_state(state: str, message: str | None,
                                              expected: str) -> None:
    assert state_text(state, message) == expected
    detail = state_detail(state, message)
    assert (detail is None) == (expected == state)
