"""Schedule math: cron, interval and rrule next times, with DST in New York and London."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from pydantic import ValidationError

from dispatcher.models import ScheduleSpec
from dispatcher.schedules import ScheduleError, next_times, validate_schedule

NY = "America/New_York"
LONDON = "Europe/London"
# 2026 transitions: New York 03-08 02:00 EST -> 03:00 EDT and 11-01 02:00 EDT -> 01:00 EST;
# London 03-29 01:00 GMT -> 02:00 BST and 10-25 02:00 BST -> 01:00 GMT.


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(times: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M %Z") for t in times]


def schedule_error(spec: Any, field: str = "schedules[0]") -> ScheduleError:
    with pytest.raises(ScheduleError) as info:
        validate_schedule(spec, field)
    return info.value


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize("spec", [
    ScheduleSpec(cron="*/5 9-17 * * mon-fri", timezone=NY),
    ScheduleSpec(cron="@daily"),
    ScheduleSpec(interval=90, anchor_date=datetime(2026, 1, 1, 12)),
    ScheduleSpec(rrule="FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9", timezone=LONDON),
    ScheduleSpec(rrule="DTSTART:20260105T090000\nRRULE:FREQ=DAILY;COUNT=3"),
    ScheduleSpec(rrule="RRULE:FREQ=DAILY;UNTIL=20270101T000000Z", timezone=NY),
])
def test_valid_schedules_pass(spec: ScheduleSpec) -> None:
    validate_schedule(spec)


@pytest.mark.parametrize("cron", ["* * * *", "61 * * * *", "abc", "", "* * * * * *",
                                  "0 0 30 2 *", "H * * * *"])
def test_bad_cron_names_the_cron_field(cron: str) -> None:
    err = schedule_error(ScheduleSpec(cron=cron), "schedules[2]")
    assert err.field == "schedules[2].cron"
    assert "five fields" in err.fix or "day-of-month" in err.fix
    assert str(err) == f"{err.field}: {err.message}; {err.fix}"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "EST5EDT/x"])
def test_unknown_time_zone_names_the_timezone_field(zone: str) -> None:
    err = schedule_error(ScheduleSpec(cron="0 9 * * *", timezone=zone))
    assert err.field == "schedules[0].timezone"
    assert "America/New_York" in err.fix
    with pytest.raises(ScheduleError) as info:
        next_times(ScheduleSpec(interval=60, timezone=zone), utc(2026, 1, 1), count=1)
    assert info.value.field == "schedule.timezone"


@pytest.mark.parametrize("rule", ["FREQ=SOMETIMES", "nonsense", "FREQ=DAILY;BYHOUR=25",
                                  "DTSTART:20260101T000000\nRRULE:FREQ=DAILY;UNTIL=20260201T000000Z"])
def test_bad_rrule_names_the_rrule_field(rule: str) -> None:
    err = schedule_error(ScheduleSpec(rrule=rule))
    assert err.field == "schedules[0].rrule"
    assert "RFC 5545" in err.fix


@pytest.mark.parametrize("seconds", [0.0, -5.0, float("inf"), float("nan"), 1e-9])
def test_bad_interval_names_the_interval_field(seconds: float) -> None:
    # model_construct skips pydantic's own gt=0 check, as a stored row might.
    err = schedule_error(ScheduleSpec.model_construct(interval=seconds, timezone="UTC"))
    assert err.field == "schedules[0].interval"


def test_pydantic_already_rejects_non_positive_intervals_and_mixed_kinds() -> None:
    with pytest.raises(ValidationError):
        ScheduleSpec(interval=0)
    with pytest.raises(ValidationError):
        ScheduleSpec(interval=60, cron="* * * * *")


def test_next_times_requires_aware_bounds_and_positive_count() -> None:
    spec = ScheduleSpec(interval=60)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_times(spec, datetime(2026, 1, 1), count=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_times(spec, utc(2026, 1, 1), count=1, until=datetime(2026, 2, 1))
    assert next_times(spec, utc(2026, 1, 1), count=0) == []


# ---------------------------------------------------------------------------- cron


def test_cron_results_are_strictly_after_utc_ascending_and_counted() -> None:
    spec = ScheduleSpec(cron="0 9 * * mon")  # Mondays 09:00 UTC; 2026-01-05 is a Monday
    times = next_times(spec, utc(2026, 1, 5, 9), count=3)
    assert times == [utc(2026, 1, 12, 9), utc(2026, 1, 19, 9), utc(2026, 1, 26, 9)]
    assert all(t.tzinfo is UTC for t in times)


def test_cron_after_in_another_zone_means_the_same_instant() -> None:
    spec = ScheduleSpec(cron="*/10 * * * *", timezone=LONDON)
    after = utc(2026, 6, 1, 12, 5)
    assert next_times(spec, after.astimezone(ZoneInfo(NY)), count=4) == \
        next_times(spec, after, count=4)


def test_cron_until_is_inclusive_and_can_end_early() -> None:
    spec = ScheduleSpec(cron="0 * * * *")
    assert next_times(spec, utc(2026, 1, 1), count=10, until=utc(2026, 1, 1, 3)) == [
        utc(2026, 1, 1, 1), utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)]
    assert next_times(spec, utc(2026, 1, 1), count=10, until=utc(2025, 12, 31)) == []


def test_cron_daily_in_spring_gap_runs_once_shifted_new_york() -> None:
    spec = ScheduleSpec(cron="30 2 * * *", timezone=NY)
    times = next_times(spec, utc(2026, 3, 6), count=4)
    assert local(times, NY) == ["03-06 02:30 EST", "03-07 02:30 EST", "03-08 03:30 EDT",
                                "03-09 02:30 EDT"]


def test_cron_daily_in_repeated_hour_runs_once_new_york() -> None:
    spec = ScheduleSpec(cron="30 1 * * *", timezone=NY)
    times = next_times(spec, utc(2026, 10, 31), count=3)
    assert local(times, NY) == ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST"]
    assert times[1] == utc(2026, 11, 1, 5, 30)


def test_cron_daily_london_both_transitions() -> None:
    spec = ScheduleSpec(cron="30 1 * * *", timezone=LONDON)
    spring = next_times(spec, utc(2026, 3, 28), count=3)
    assert local(spring, LONDON) == ["03-28 01:30 GMT", "03-29 02:30 BST", "03-30 01:30 BST"]
    autumn = next_times(spec, utc(2026, 10, 24), count=3)
    assert local(autumn, LONDON) == ["10-24 01:30 BST", "10-25 01:30 BST", "10-26 01:30 GMT"]


@pytest.mark.parametrize(("zone", "start"), [
    (NY, utc(2026, 3, 8, 3)), (NY, utc(2026, 11, 1, 2)),
    (LONDON, utc(2026, 3, 28, 22)), (LONDON, utc(2026, 10, 24, 22)),
])
def test_cron_hourly_fires_every_real_hour_once_across_transitions(zone: str,
                                                                    start: datetime) -> None:
    times = next_times(ScheduleSpec(cron="0 * * * *", timezone=zone), start, count=8)
    assert times == [start + timedelta(hours=n) for n in range(1, 9)]


@pytest.mark.parametrize("start", [utc(2026, 3, 8, 5), utc(2026, 11, 1, 4)])
def test_cron_every_half_hour_keeps_half_hour_spacing_across_transitions(
        start: datetime) -> None:
    times = next_times(ScheduleSpec(cron="*/30 * * * *", timezone=NY), start, count=10)
    assert times == [start + timedelta(minutes=30 * n) for n in range(1, 11)]


def test_cron_fixed_hour_job_does_not_repeat_in_the_repeated_hour() -> None:
    # Every minute of 01:xx, but only the first 01:xx of the fall-back night.
    spec = ScheduleSpec(cron="*/20 1 * * *", timezone=NY)
    times = next_times(spec, utc(2026, 11, 1), count=4)
    assert local(times, NY) == ["11-01 01:00 EDT", "11-01 01:20 EDT", "11-01 01:40 EDT",
                                "11-02 01:00 EST"]


def test_cron_results_just_before_a_gap_shift_are_not_lost() -> None:
    # 'after' is 03:10 EDT; the 02:30 wall time shifted to 03:30 EDT is still ahead of it.
    spec = ScheduleSpec(cron="30 2 * * *", timezone=NY)
    assert local(next_times(spec, utc(2026, 3, 8, 7, 10), count=1), NY) == ["03-08 03:30 EDT"]


# ---------------------------------------------------------------------------- interval


def test_interval_default_anchor_is_2020_local_midnight() -> None:
    spec = ScheduleSpec(interval=5400)  # 90 minutes from 2020-01-01 00:00 UTC
    # 2020-01-01 to 2026-01-01 is 35072 intervals, so 2026-01-01 00:00 UTC is a firing.
    assert next_times(spec, utc(2026, 1, 1, 0, 1), count=3) == [
        utc(2026, 1, 1, 1, 30), utc(2026, 1, 1, 3), utc(2026, 1, 1, 4, 30)]

    hourly_ny = next_times(ScheduleSpec(interval=3600, timezone=NY), utc(2026, 1, 1), count=1)
    assert local(hourly_ny, NY) == ["12-31 20:00 EST"]


def test_interval_anchor_is_a_phase_before_and_after_it() -> None:
    spec = ScheduleSpec(interval=600, anchor_date=utc(2026, 5, 1, 12, 3))
    assert next_times(spec, utc(2026, 1, 1), count=2) == [utc(2026, 1, 1, 0, 3),
                                                           utc(2026, 1, 1, 0, 13)]
    assert next_times(spec, utc(2026, 5, 1, 12, 3), count=1) == [utc(2026, 5, 1, 12, 13)]


def test_interval_naive_anchor_is_read_in_the_schedule_zone() -> None:
    spec = ScheduleSpec(interval=7200, anchor_date=datetime(2026, 1, 10, 9, 0), timezone=NY)
    assert next_times(spec, utc(2026, 1, 10, 13), count=1) == [utc(2026, 1, 10, 14)]


def test_daily_interval_keeps_local_wall_time_across_dst() -> None:
    spec = ScheduleSpec(interval=86400, anchor_date=datetime(2026, 3, 1, 9), timezone=NY)
    times = next_times(spec, utc(2026, 3, 6), count=4)
    assert local(times, NY) == ["03-06 09:00 EST", "03-07 09:00 EST", "03-08 09:00 EDT",
                                "03-09 09:00 EDT"]
    weekly = ScheduleSpec(interval=7 * 86400, anchor_date=utc(2026, 10, 20, 13), timezone=NY)
    assert local(next_times(weekly, utc(2026, 10, 21), count=2), NY) == [
        "10-27 09:00 EDT", "11-03 09:00 EST"]


def test_sub_day_interval_is_exact_seconds_across_dst() -> None:
    spec = ScheduleSpec(interval=43200, anchor_date=datetime(2026, 3, 1, 9), timezone=NY)
    times = next_times(spec, utc(2026, 3, 7, 15), count=3)
    assert local(times, NY) == ["03-07 21:00 EST", "03-08 10:00 EDT", "03-08 22:00 EDT"]


def test_interval_until_and_count() -> None:
    spec = ScheduleSpec(interval=60)
    assert len(next_times(spec, utc(2026, 1, 1), count=1000)) == 1000
    assert next_times(spec, utc(2026, 1, 1), count=1000, until=utc(2026, 1, 1, 0, 2, 30)) == [
        utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2)]


# ---------------------------------------------------------------------------- rrule


def test_rrule_without_dtstart_starts_at_2020_local_midnight() -> None:
    spec = ScheduleSpec(rrule="FREQ=DAILY;BYHOUR=9", timezone=NY)
    times = next_times(spec, utc(2026, 3, 7), count=3)
    assert local(times, NY) == ["03-07 09:00 EST", "03-08 09:00 EDT", "03-09 09:00 EDT"]
    weekly = ScheduleSpec(rrule="RRULE:FREQ=WEEKLY;BYDAY=MO", timezone=LONDON)
    assert local(next_times(weekly, utc(2026, 6, 1), count=1), LONDON) == ["06-08 00:00 BST"]
    # 2020-01-01 was a Wednesday: INTERVAL counts weeks from that DTSTART.
    fortnightly = ScheduleSpec(rrule="FREQ=WEEKLY;INTERVAL=2")
    assert next_times(fortnightly, utc(2020, 1, 2), count=2) == [utc(2020, 1, 15),
                                                                 utc(2020, 1, 29)]


def test_rrule_naive_dtstart_is_local_and_count_is_honoured() -> None:
    spec = ScheduleSpec(rrule="DTSTART:20260306T023000\nRRULE:FREQ=DAILY;COUNT=4", timezone=NY)
    everything = next_times(spec, utc(2026, 1, 1), count=100)
    assert local(everything, NY) == ["03-06 02:30 EST", "03-07 02:30 EST", "03-08 03:30 EDT",
                                     "03-09 02:30 EDT"]
    assert next_times(spec, everything[1], count=100) == everything[2:]


def test_rrule_dtstart_with_its_own_zone_wins() -> None:
    spec = ScheduleSpec(rrule="DTSTART;TZID=Europe/London:20260301T090000\nRRULE:FREQ=DAILY",
                        timezone=NY)
    assert next_times(spec, utc(2026, 3, 28), count=3) == [
        utc(2026, 3, 28, 9), utc(2026, 3, 29, 8), utc(2026, 3, 30, 8)]
    in_utc = ScheduleSpec(rrule="DTSTART:20260301T090000Z\nRRULE:FREQ=DAILY;COUNT=2",
                          timezone=NY)
    assert next_times(in_utc, utc(2026, 1, 1), count=5) == [utc(2026, 3, 1, 9),
                                                            utc(2026, 3, 2, 9)]


def test_rrule_until_is_honoured_in_utc_and_local() -> None:
    utc_until = ScheduleSpec(rrule="FREQ=DAILY;UNTIL=20260308T000000Z", timezone=NY)
    assert local(next_times(utc_until, utc(2026, 3, 5), count=10), NY) == [
        "03-05 00:00 EST", "03-06 00:00 EST", "03-07 00:00 EST"]
    local_until = ScheduleSpec(rrule="DTSTART:20260305T120000\nRRULE:FREQ=DAILY;"
                                     "UNTIL=20260307T120000", timezone=NY)
    assert len(next_times(local_until, utc(2026, 1, 1), count=10)) == 3


def test_rrule_sets_with_exdate() -> None:
    spec = ScheduleSpec(rrule="DTSTART:20260101T080000\nRRULE:FREQ=DAILY;COUNT=4\n"
                              "EXDATE:20260102T080000")
    assert next_times(spec, utc(2025, 1, 1), count=10) == [
        utc(2026, 1, 1, 8), utc(2026, 1, 3, 8), utc(2026, 1, 4, 8)]


@pytest.mark.parametrize(("rule", "after"), [
    ("FREQ=HOURLY;INTERVAL=5;BYMINUTE=15", utc(2024, 7, 3, 10, 20)),
    ("FREQ=MINUTELY;INTERVAL=7", utc(2020, 3, 3, 10, 24, 30)),
    ("FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,FR;BYHOUR=6", utc(2024, 7, 10, 10, 20)),
])
def test_rrule_results_match_plain_iteration_from_dtstart(rule: str, after: datetime) -> None:
    # next_times skips ahead instead of iterating from 2020; the occurrences must not change.
    expected = [t.replace(tzinfo=UTC) for t in rrulestr(rule, dtstart=datetime(2020, 1, 1))
                .xafter(after.replace(tzinfo=None), count=5)]
    assert next_times(ScheduleSpec(rrule=rule), after, count=5) == expected


def test_rrule_with_no_occurrence_left_is_empty() -> None:
    spec = ScheduleSpec(rrule="DTSTART:20200101T000000\nRRULE:FREQ=DAILY;COUNT=2")
    assert next_times(spec, utc(2026, 1, 1), count=3) == []
