"""Schedule math: the next run times of a cron, interval or rrule schedule, with time zones.

Pure, no I/O. Results are timezone-aware UTC datetimes, ascending, without duplicates.

Wall-clock rules (cron, day-multiple intervals, rrules) follow RFC 5545 §3.3.5:

- A wall time that does not exist (spring forward) runs at the UTC offset from before the gap,
  i.e. shifted forward by the gap: a daily 02:30 America/New_York job runs at 03:30 EDT on
  2026-03-08. If the shifted time is also a regular firing (an hourly job's 03:00) it runs once.
- A wall time that happens twice (fall back) runs once, at its first occurrence: a daily 01:30
  job runs at 01:30 EDT on 2026-11-01, not again at 01:30 EST.
- Exception for cron: when the hour field is ``*`` (the job runs every hour), the repeated hour
  runs at both occurrences, so an hourly job fires every real hour exactly once across both
  transitions, as Vixie cron does for wildcard jobs.

Kinds:

- cron: five fields (minute hour day-of-month month day-of-week) or an ``@daily``-style alias,
  evaluated on wall-clock time in the schedule's time zone.
- interval: ``anchor + k * interval`` for every integer k (the anchor fixes the phase, it is not
  a start date). The anchor defaults to 2020-01-01 00:00 in the schedule's time zone; a naive
  anchor is read in that zone. A whole number of days keeps the anchor's wall-clock time across
  DST (daily 09:00 stays 09:00 local); any other interval is exact elapsed seconds.
- rrule: RFC 5545 text for ``dateutil.rrule.rrulestr``. A DTSTART in the text is honoured (read
  in the schedule's zone when it has no zone of its own); without one DTSTART is 2020-01-01
  00:00 local. COUNT and UNTIL are honoured.

Whether a schedule is active is the scheduler's business: ``next_times`` only does the math.
Parsed specs, cron expressions and rrules are cached by their text (``parse_spec``), so a
scheduler pass over many schedules with the same spec parses it once.
"""

from __future__ import annotations

import bisect
import copy
import functools
import json
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter
from dateutil.rrule import DAILY, HOURLY, MINUTELY, SECONDLY, WEEKLY, rrule, rrulestr

from dispatcher.models import ScheduleSpec

DEFAULT_START = datetime(2020, 1, 1)  # local wall time: default interval anchor and rrule DTSTART
# Wall-clock sources yield instants that are ascending except near a DST transition, where one
# may come up to the size of the shift (at most 2 h in the tz database) before the previous one.
_REORDER_WINDOW = timedelta(hours=3)
_DAY = 86400
# Frequencies whose periods are fixed wall-clock lengths, so a rule can start later by whole
# periods without changing its occurrences (monthly and yearly rules are cheap to iterate).
_PERIODS = {WEEKLY: timedelta(weeks=1), DAILY: timedelta(days=1), HOURLY: timedelta(hours=1),
            MINUTELY: timedelta(minutes=1), SECONDLY: timedelta(seconds=1)}


class ScheduleError(ValueError):
    """A schedule field is wrong: ``field`` is its dotted path, ``fix`` says what to do."""

    def __init__(self, field: str, message: str, fix: str):
        super().__init__(f"{field}: {message}; {fix}")
        self.field = field
        self.message = message
        self.fix = fix


# ---------------------------------------------------------------------------- parsing

_PARSED = 4096  # distinct specs, crons and rrules kept parsed


def spec_key(stored: dict[str, Any]) -> str:
    """A stored spec's cache key: the same schedule gives the same text."""
    return json.dumps(stored, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=_PARSED)
def parse_spec(key: str) -> ScheduleSpec:
    """The spec of ``spec_key(stored)``; shared between callers, so never change it."""
    return ScheduleSpec.model_validate(json.loads(key))


class _Invalid(Exception):
    """A parse error without the field name, which the cached parsers do not know."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.message = message
        self.fix = fix



def _zone(spec: ScheduleSpec, field: str) -> ZoneInfo:
    try:
        return ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{field}.timezone", f"unknown time zone {spec.timezone!r}",
                            "use an IANA name such as 'UTC', 'Europe/London' or "
                            "'America/New_York'") from None


def _cron(expr: str, field: str) -> croniter:
    """The checked expression, parsed once; iterate a copy (``_cron_walls``), not this."""
    try:
        return _checked_cron(expr)
    except _Invalid as bad:
        raise ScheduleError(f"{field}.cron", bad.message, bad.fix) from None


@functools.lru_cache(maxsize=_PARSED)
def _checked_cron(expr: str) -> croniter:
    fix = ("use five fields 'minute hour day-of-month month day-of-week' (e.g. '30 2 * * *') "
           "or an alias such as '@daily'")
    try:
        parsed = croniter(expr, DEFAULT_START)
    except CroniterError as err:
        raise _Invalid(f"invalid cron expression {expr!r}: {err}", fix) from None
    if len(parsed.expanded) != 5:
        raise _Invalid(f"cron expression {expr!r} has a seconds field", fix)
    try:
        parsed.get_next(datetime)
    except CroniterBadDateError:
        raise _Invalid(f"cron expression {expr!r} matches no date",
                       "check the day-of-month and month fields (e.g. '30 2' is "
                       "30 February)") from None
    return parsed


def _rrule(text: str, tz: ZoneInfo, field: str) -> Any:
    try:
        return _parsed_rrule(text, tz)
    except _Invalid as bad:
        raise ScheduleError(f"{field}.rrule", bad.message, bad.fix) from None


@functools.lru_cache(maxsize=_PARSED)
def _parsed_rrule(text: str, tz: ZoneInfo) -> Any:
    """The parsed rule; DTSTART defaults to 2020-01-01 local (naive, or aware when the text's
    UNTIL is in UTC, because dateutil wants both the same kind). Parsed without dateutil's
    cache, so iterating it changes nothing and the rule can be shared."""
    errors = []
    for default_start in (DEFAULT_START, DEFAULT_START.replace(tzinfo=tz)):
        try:
            return rrulestr(text, dtstart=default_start, cache=False)
        except (ValueError, TypeError) as err:
            errors.append(str(err))
    raise _Invalid(f"invalid rrule {text!r}: {errors[0]}",
                   "use RFC 5545 text such as 'FREQ=WEEKLY;BYDAY=MO;BYHOUR=9' or "
                   "'DTSTART:20260105T090000\\nRRULE:FREQ=DAILY;COUNT=10'")


def _interval(seconds: float | None, field: str) -> timedelta:
    fix = "give the interval as a positive number of seconds, e.g. 3600"
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ScheduleError(f"{field}.interval", "must be a positive, finite number", fix)
    step = timedelta(seconds=seconds)
    if step <= timedelta(0):
        raise ScheduleError(f"{field}.interval", "is shorter than a microsecond", fix)
    return step


def validate_schedule(spec: ScheduleSpec, field: str = "schedules[0]") -> None:
    """Raise ``ScheduleError`` naming the bad field (``<field>.cron``, ``.timezone``, ...)."""
    tz = _zone(spec, field)
    if spec.kind == "cron":
        _cron(spec.cron or "", field)
    elif spec.kind == "interval":
        _interval(spec.interval, field)
    else:
        _rrule(spec.rrule or "", tz, field)


# ---------------------------------------------------------------------------- next times


def next_times(spec: ScheduleSpec, after: datetime, *, count: int,
               until: datetime | None = None) -> list[datetime]:
    """Up to ``count`` run times strictly after ``after`` and not later than ``until``."""
    if after.tzinfo is None or (until is not None and until.tzinfo is None):
        raise ValueError("next_times needs timezone-aware 'after' and 'until' datetimes")
    if count <= 0:
        return []
    field = "schedule"
    tz = _zone(spec, field)
    after_wall = after.astimezone(tz).replace(tzinfo=None)
    window = _REORDER_WINDOW
    if spec.kind == "cron":
        parsed = _cron(spec.cron or "", field)
        every_hour = parsed.expanded[1] == ["*"]
        walls = _cron_walls(parsed, after_wall - _REORDER_WINDOW)
        instants = _wall_instants(walls, tz, both_folds_of_repeated_hour=every_hour)
    elif spec.kind == "interval":
        step = _interval(spec.interval, field)
        instants = _interval_instants(spec, tz, after, step)
        if step.total_seconds() % _DAY:
            window = timedelta(0)  # exact seconds: already ascending
    else:
        instants = _rrule_instants(_rrule(spec.rrule or "", tz, field), tz, after)
    return _collect(instants, after, until, count, window)


def _to_utc(wall: datetime, tz: ZoneInfo, fold: int = 0) -> datetime:
    # fold=0 is RFC 5545's reading: the first of a repeated time, the pre-gap offset in a gap.
    return wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)


def _wall_instants(walls: Iterable[datetime], tz: ZoneInfo, *,
                   both_folds_of_repeated_hour: bool = False) -> Iterator[datetime]:
    for wall in walls:
        first = _to_utc(wall, tz)
        yield first
        if both_folds_of_repeated_hour:
            second = _to_utc(wall, tz, fold=1)
            # In a gap fold=1 also differs, but it does not read back as this wall time.
            if second != first and second.astimezone(tz).replace(tzinfo=None) == wall:
                yield second


def _cron_walls(parsed: croniter, start: datetime) -> Iterator[datetime]:
    # croniter runs on naive wall-clock time only; zones are applied by _wall_instants.
    # A copy of the cached parse: croniter keeps its position in the object.
    walls = copy.copy(parsed)
    walls.set_current(start)
    while True:
        try:
            yield walls.get_next(datetime)
        except CroniterBadDateError:  # no further match within croniter's search horizon
            return


def _interval_instants(spec: ScheduleSpec, tz: ZoneInfo, after: datetime,
                       step: timedelta) -> Iterator[datetime]:
    anchor = spec.anchor_date or DEFAULT_START
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=tz)
    if step.total_seconds() % _DAY == 0:  # whole days: same wall-clock time every time
        anchor_wall = anchor.astimezone(tz).replace(tzinfo=None)
        after_wall = after.astimezone(tz).replace(tzinfo=None)
        k = (after_wall - anchor_wall) // step - 1
        yield from _wall_instants((anchor_wall + n * step for n in _count_from(k)), tz)
    else:
        k = (after - anchor) // step
        yield from (anchor.astimezone(UTC) + n * step for n in _count_from(k))


def _count_from(k: int) -> Iterator[int]:
    while True:
        yield k
        k += 1


def _rrule_instants(rule: Any, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    first = next(iter(rule), None)
    if first is None:
        return
    if first.tzinfo is None:  # wall-clock times in the schedule's zone
        start = after.astimezone(tz).replace(tzinfo=None) - _REORDER_WINDOW
        yield from _wall_instants(_skip_ahead(rule, start).xafter(start), tz)
    else:  # DTSTART carried its own zone (TZID or Z): dateutil already applied it
        start = after.astimezone(first.tzinfo) - _REORDER_WINDOW
        yield from (t.astimezone(UTC) for t in _skip_ahead(rule, start).xafter(start))


def _skip_ahead(rule: Any, start: datetime) -> Any:
    """The same rule with DTSTART moved forward by whole periods to just before ``start``:
    dateutil iterates from DTSTART, and a minutely rule from 2020 would take seconds.
    Not for rules with COUNT (it counts from the original DTSTART) or for rule sets."""
    # dateutil has no public accessors for these; without them we just iterate from DTSTART.
    if not isinstance(rule, rrule):
        return rule
    freq, interval, count, dtstart = (getattr(rule, name, None)
                                      for name in ("_freq", "_interval", "_count", "_dtstart"))
    if freq not in _PERIODS or not isinstance(interval, int) or count or dtstart is None:
        return rule
    period = _PERIODS[freq] * interval
    # Wall-clock difference: dateutil steps wall-clock time, also for aware DTSTARTs.
    periods = (start.replace(tzinfo=None) - dtstart.replace(tzinfo=None)) // period - 1
    return rule.replace(dtstart=dtstart + periods * period) if periods > 0 else rule


def _collect(instants: Iterable[datetime], after: datetime, until: datetime | None,
             count: int, window: timedelta) -> list[datetime]:
    """The ``count`` smallest distinct instants in (after, until] from a stream in which no
    instant comes more than ``window`` before one already seen."""
    found: list[datetime] = []
    for instant in instants:
        if until is not None and instant - window > until:
            break
        if len(found) == count and instant - window >= found[-1]:
            break
        if instant <= after or (until is not None and instant > until):
            continue
        index = bisect.bisect_left(found, instant)
        if index == len(found) or found[index] != instant:
            found.insert(index, instant)
            del found[count:]
    return found
