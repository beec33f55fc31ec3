"""The fake Cloud Logging API: ``POST /v2/entries:list`` over the entries a test writes.

Entries look like the ones Cloud Run writes for a job's containers (``resource.type
cloud_run_job``, ``labels."run.googleapis.com/execution_name"``, ``logName
projects/P/logs/run.googleapis.com%2Fstdout``). The filter language is the subset the
adapter and google-cloud-logging send: clauses joined by ``AND``, each ``field="value"``,
``field>="value"`` or ``field<="value"`` over ``resource.type``, ``resource.labels.X``,
``labels."X"``, ``logName``, ``severity`` and ``timestamp``; anything else is refused
(400), so a filter the real service might read differently fails loudly here.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.cloud_run.server import Answer, ApiError, FakeServer

_CLAUSE = re.compile(r'^\s*([A-Za-z_.]+(?:\."[^"]+")?)\s*(>=|<=|=)\s*"([^"]*)"\s*$')


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LoggingApi:
    def __init__(self, server: FakeServer):
        self.server = server
        self.entries: list[dict[str, Any]] = []
        self._last = datetime.now(UTC)
        server.route("POST", r"/v2/entries:list", "entries.list", self._list)

    def reset(self) -> None:
        with self.server.lock:
            self.entries.clear()

    def write(self, execution: dict[str, Any], lines: list[str], stream: str = "stdout",
              *, task_index: int = 0, timestamp: datetime | None = None) -> None:
        """Log lines as Cloud Run would for a task of ``execution``; each line gets a
        later timestamp than the one before, unless ``timestamp`` pins them all."""
        parts = execution["name"].split("/")
        project, region, job, short = parts[1], parts[3], parts[5], parts[7]
        with self.server.lock:
            for line in lines:
                if timestamp is None:
                    self._last = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
                    moment = self._last
                else:
                    moment = timestamp
                self.entries.append({
                    "logName": f"projects/{project}/logs/run.googleapis.com%2F{stream}",
                    "resource": {"type": "cloud_run_job",
                                 "labels": {"project_id": project, "job_name": job,
                                            "location": region}},
                    "labels": {"run.googleapis.com/execution_name": short,
                               "run.googleapis.com/task_index": str(task_index),
                               "run.googleapis.com/task_attempt": "0",
                               "instanceId": "00f1"},
                    "textPayload": line, "timestamp": _stamp(moment),
                    "receiveTimestamp": _stamp(moment),
                    "severity": "ERROR" if stream == "stderr" else "INFO",
                    "insertId": uuid.uuid4().hex[:16]})

    @staticmethod
    def _field(entry: dict[str, Any], field: str) -> str | None:
        if field.startswith('labels."'):
            return (entry.get("labels") or {}).get(field[len('labels."'):-1])
        if field.startswith("resource.labels."):
            return (entry.get("resource") or {}).get("labels", {}).get(
                field[len("resource.labels."):])
        if field == "resource.type":
            return (entry.get("resource") or {}).get("type")
        if field in ("logName", "severity", "timestamp"):
            return entry.get(field)
        raise ApiError(400, f"Unsupported field in filter: {field}")

    def _matches(self, entry: dict[str, Any], clauses: list[tuple[str, str, str]]) -> bool:
        for field, op, value in clauses:
            actual = self._field(entry, field)
            if actual is None:
                return False
            if field == "timestamp":
                value = _stamp(datetime.fromisoformat(value.replace("Z", "+00:00")))
            if op == "=" and actual != value:
                return False
            if op == ">=" and actual < value:
                return False
            if op == "<=" and actual > value:
                return False
        return True

    def _list(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        text = str(body.get("filter") or "")
        clauses = []
        for part in (p for p in re.split(r"\s+AND\s+", text) if p.strip()):
            match = _CLAUSE.match(part.strip("() "))
            if match is None:
                raise ApiError(400, f"Invalid filter clause: {part!r}")
            clauses.append((match.group(1), match.group(2), match.group(3)))
        projects = {str(n).split("/")[1] for n in body.get("resourceNames") or []}
        entries = [e for e in self.entries
                   if e["logName"].split("/")[1] in projects and self._matches(e, clauses)]
        descending = "desc" in str(body.get("orderBy") or "").lower()
        entries.sort(key=lambda e: (e["timestamp"], e["insertId"]), reverse=descending)
        size = int(body.get("pageSize") or 1000)
        start = int(body.get("pageToken") or 0)
        answer: dict[str, Any] = {"entries": entries[start:start + size]}
        if start + size < len(entries):
            answer["nextPageToken"] = str(start + size)
        return 200, answer
