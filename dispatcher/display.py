"""How values read for people: short ids, relative times, durations and state lines.

Pure text, no I/O and no Rich, so the command line and any server-rendered page share
one wording. Machines get the full id and RFC 3339 times (``--output json``, the API).
"""

from __future__ import annotations

from datetime import UTC, datetime

SHORT_ID_LENGTH = 8  # what `run ls` shows and every run command accepts
# (unit, seconds in it, shown in this unit while the distance is under this many seconds)
_UNITS = (("second", 1, 45), ("minute", 60, 45 * 60), ("hour", 3600, 36 * 3600),
          ("day", 86400, 45 * 86400), ("month", 30 * 86400, 365 * 86400),
          ("year", 365 * 86400, float("inf")))
NOW_SECONDS = 1.0  # closer than this is "now"


def short_id(full_id: str | None) -> str | None:
    """The first characters of an id: unique enough to type, short enough for a table."""
    return None if full_id is None else full_id[:SHORT_ID_LENGTH]


def parse_time(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 string (or a datetime) as an aware UTC datetime; None when unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(value: str | datetime | None) -> str | None:
    """An RFC 3339 time as ``YYYY-MM-DD HH:MM:SS`` UTC (None stays None)."""
    moment = parse_time(value)
    if moment is None:
        return None if not value else str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def time_and_distance(value: str | datetime | None, now: datetime | None = None
                      ) -> str | None:
    """``2026-01-01 09:00:00 UTC (in 10 minutes)``, for ``inspect`` pages."""
    moment = parse_time(value)
    if moment is None:
        return format_time(value)
    return f"{format_time(moment)} UTC ({relative_time(moment, now)})"


def relative_time(value: str | datetime | None, now: datetime | None = None) -> str | None:
    """``in 5 minutes``, ``2 hours ago``, ``now`` (None when there is no time)."""
    moment = parse_time(value)
    if moment is None:
        return None if not value else str(value)
    seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    distance = abs(seconds)
    if distance < NOW_SECONDS:
        return "now"
    unit, size = next((unit, size) for unit, size, below in _UNITS if distance < below)
    count = max(1, round(distance / size))
    words = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"in {words}" if seconds > 0 else f"{words} ago"


def duration_text(seconds: float | None) -> str | None:
    """``0.4s``, ``12s``, ``4m 05s``, ``1h 02m``, ``3d 04h`` (None stays None)."""
    if seconds is None:
        return None
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def run_duration(started_at: str | datetime | None, ended_at: str | datetime | None,
                 now: datetime | None = None) -> str | None:
    """How long a run has run: start to end, or start to now while it runs."""
    start = parse_time(started_at)
    if start is None:
        return None
    end = parse_time(ended_at) or now or datetime.now(UTC)
    return duration_text((end - start).total_seconds())


def state_detail(state: str, message: str | None) -> str | None:
    """What a state message adds to the state's name: ``exited with code 3``; None when
    it only repeats it (``cancelled`` for CANCELLED)."""
    detail = (message or "").strip()
    word = state.lower()
    if detail.lower().startswith(f"{word}: "):
        detail = detail[len(word) + 2:].strip()
    return None if not detail or detail.lower() == word else detail


def state_text(state: str, message: str | None) -> str:
    """``FAILED: exited with code 3``; ``CANCELLED``, never ``CANCELLED: cancelled``."""
    detail = state_detail(state, message)
    return state if detail is None else f"{state}: {detail}"
