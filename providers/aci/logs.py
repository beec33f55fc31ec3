"""A run's logs from ``containers.list_logs``, cut into new lines with a cursor.

ACI returns the whole log each time (the last 4 MB of a running container), never a
page. Asked with ``timestamps=true`` every line starts with an RFC 3339 time in
nanoseconds, so the cursor is (last time seen, lines already taken at that time): a
later read skips what came before, even when ACI's log window has moved on, and never
repeats a line. Lines without a time (a wrapped line) belong to the line before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from providers.base import LogBatch, LogLine, PermanentProviderError

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ?(.*)$")


@dataclass(frozen=True)
class Cursor:
    stamp: str  # "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ", comparable as text
    taken: int  # lines already returned at exactly this stamp

    def encode(self) -> str:
        return json.dumps({"t": self.stamp, "n": self.taken}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["t"]), int(data["n"]))
        except (ValueError, KeyError, TypeError):
            raise PermanentProviderError(f"not an ACI log cursor: {text!r}") from None


def _parse(line: str) -> tuple[str, datetime, str] | None:
    match = _STAMP.match(line)
    if not match:
        return None
    seconds, fraction, zone, message = match.groups()
    fraction = (fraction or "").ljust(9, "0")
    try:
        when = datetime.fromisoformat(f"{seconds}.{fraction[:6]}{zone.replace('Z', '+00:00')}")
    except ValueError:
        return None
    when = when.astimezone(UTC)
    key = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}{fraction[6:]}Z"
    return key, when, message


def new_lines(content: str | None, cursor: str | None) -> LogBatch:
    """The lines of ``content`` after ``cursor``, and the cursor to pass next time."""
    after = Cursor.decode(cursor)
    stamp, taken = (after.stamp, after.taken) if after else ("", 0)
    out: list[LogLine] = []
    seen_at_stamp = 0
    current: str | None = None
    keep = False
    for raw in (content or "").splitlines():
        parsed = _parse(raw)
        if parsed is None:
            # No time: a continuation of the line before; it goes where that one went.
            if keep and out:
                last = out[-1]
                out[-1] = LogLine(last.timestamp, f"{last.message}\n{raw}", last.stream)
            continue
        key, when, message = parsed
        if key != current:
            current, seen_at_stamp = key, 0
        seen_at_stamp += 1
        keep = key > stamp or (key == stamp and seen_at_stamp > taken)
        if keep:
            out.append(LogLine(when, message))
            if key == stamp:
                taken = seen_at_stamp
            else:
                stamp, taken = key, seen_at_stamp
    if not out and after is None:
        return LogBatch([], None)
    return LogBatch(out, Cursor(stamp, taken).encode() if stamp else cursor)
