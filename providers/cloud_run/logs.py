"""Cloud Logging entries of one execution, read after a cursor that never repeats a line.

Cloud Run writes a job's stdout and stderr to Cloud Logging (``resource.type =
cloud_run_job``, the execution in the label ``run.googleapis.com/execution_name``); its
own messages about the execution go to the ``varlog/system`` log and come back here as
stream ``system``. Entries are read in ascending timestamp order from the cursor's
timestamp on (``timestamp >= T`` also keeps Cloud Logging from adding its default
"last 24 hours" window); the cursor keeps the insert ids already returned at that
timestamp, so entries sharing a timestamp are neither lost nor repeated.

Cloud Logging's entries.list quota is low (60 a minute per project by default), so the
adapter budgets these reads and skips a poll rather than fail it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from providers.base import LogBatch, LogLine

EXECUTION_LABEL = "run.googleapis.com/execution_name"


@dataclass(frozen=True)
class Cursor:
    timestamp: str  # RFC 3339, UTC, microseconds
    seen: tuple[str, ...]  # insert ids already returned at ``timestamp``

    def encode(self) -> str:
        raw = json.dumps({"t": self.timestamp, "ids": list(self.seen)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        if not text:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(text.encode()))
            return cls(str(data["t"]), tuple(str(i) for i in data.get("ids") or []))
        except (ValueError, KeyError, TypeError):
            raise ValueError("cursor: not a cursor this adapter made; pass the one "
                             "the last logs() call returned") from None


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_filter(project: str, region: str, execution_name: str, since: str) -> str:
    job = execution_name.split("/jobs/", 1)[-1].split("/", 1)[0]
    execution = execution_name.rsplit("/", 1)[-1]
    del project  # the project is the list call's resource name
    return (f'resource.type="cloud_run_job" AND resource.labels.job_name="{job}" AND '
            f'resource.labels.location="{region}" AND '
            f'labels."{EXECUTION_LABEL}"="{execution}" AND timestamp>="{since}"')


def stream_of(log_name: str) -> str:
    if log_name.endswith("%2Fstderr") or log_name.endswith("/stderr"):
        return "stderr"
    if log_name.endswith("%2Fstdout") or log_name.endswith("/stdout"):
        return "stdout"
    return "system"


def message_of(payload: Any) -> str:
    if payload is None:
        return ""
    if isinstance(payload, str):
        return payload.rstrip("\n")
    if isinstance(payload, dict):
        message = payload.get("message")
        return str(message) if message is not None else json.dumps(payload, default=str)
    return str(payload)


@dataclass(frozen=True)
class Entry:
    """What this module needs of a google.cloud.logging entry."""

    timestamp: datetime
    insert_id: str
    log_name: str
    payload: Any


def entries_of(raw: Iterable[Any]) -> list[Entry]:
    out = []
    for item in raw:
        stamp = getattr(item, "timestamp", None) or datetime.now(UTC)
        out.append(Entry(stamp, str(getattr(item, "insert_id", "") or ""),
                         str(getattr(item, "log_name", "") or ""), getattr(item, "payload", None)))
    return out


def next_batch(entries: Iterable[Entry], cursor: Cursor | None) -> LogBatch:
    """The entries after ``cursor`` as lines, and the cursor after them."""
    timestamp = cursor.timestamp if cursor else ""
    seen = set(cursor.seen) if cursor else set()
    lines: list[LogLine] = []
    for entry in sorted(entries, key=lambda e: (rfc3339(e.timestamp), e.insert_id)):
        stamp = rfc3339(entry.timestamp)
        if stamp < timestamp or (stamp == timestamp and entry.insert_id in seen):
            continue
        if stamp > timestamp:
            timestamp, seen = stamp, set()
        seen.add(entry.insert_id)
        lines.append(LogLine(entry.timestamp, message_of(entry.payload), stream_of(entry.log_name)))
    if not timestamp:
        return LogBatch(lines, None)
    return LogBatch(lines, Cursor(timestamp, tuple(sorted(seen))).encode())
