"""A run's logs: its awslogs stream in CloudWatch Logs, read page by page.

The stream is ``<awslogs-stream-prefix>/<container>/<task id>`` in the group named by the
task definition's log configuration. That configuration is learnt from the body pushpool
registers (so a submitting process never describes its own definition) or read once per
definition revision (revisions never change); the cursor handed back is opaque JSON
carrying the group, stream, region and GetLogEvents' forward token, so later reads need
neither DescribeTasks nor DescribeTaskDefinition.

GetLogEvents has a low account-wide quota, so no call is made that cannot find anything:
none before the task's container has started (awslogs makes the stream then), and after
a ResourceNotFoundException the next read waits, doubling from ``missing_backoff`` up to
``missing_backoff_cap`` seconds; the wait travels in the cursor, so it holds in any
process. A stopped task is read once more whatever the wait, for its last lines.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from providers.base import LogBatch, LogLine, PermanentProviderError
from providers.ecs.aws import AwsClients, Connection, code_of
from providers.ecs.events import main_container, task_id

DescribeTask = Callable[[], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True)
class Target:
    """Where awslogs writes one container's output."""

    group: str
    prefix: str
    region: str
    container: str


@dataclass(frozen=True)
class Cursor:
    group: str
    stream: str
    region: str
    token: str | None = None
    misses: int = 0  # ResourceNotFoundException answers in a row
    not_before: float = 0.0  # wall-clock time before which a read would find nothing

    def encode(self) -> str:
        data: dict[str, Any] = {"g": self.group, "s": self.stream, "r": self.region,
                                "t": self.token}
        if self.misses:
            data.update(m=self.misses, w=round(self.not_before, 3))
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            data = json.loads(text)
            return cls(str(data["g"]), str(data["s"]), str(data["r"]), data.get("t"),
                       int(data.get("m", 0)), float(data.get("w", 0.0)))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise PermanentProviderError(f"not an ECS log cursor: {text!r}") from None


def container_started(task: Mapping[str, Any]) -> bool:
    """Whether the task's flow container has run: only then can its log stream exist."""
    container = main_container(task)
    if container is None:
        return bool(task.get("startedAt"))
    status = container.get("lastStatus")
    # A container that stopped without an exit code never started (an image pull failed).
    return status == "RUNNING" or (status == "STOPPED"
                                   and container.get("exitCode") is not None)


def target_of(container: Mapping[str, Any], region: str) -> Target | None:
    """The awslogs target of a container definition (None: it does not use awslogs)."""
    log_config = container.get("logConfiguration") or {}
    options = log_config.get("options") or {}
    if log_config.get("logDriver") != "awslogs" or "awslogs-group" not in options:
        return None
    return Target(group=options["awslogs-group"],
                  prefix=options.get("awslogs-stream-prefix", ""),
                  region=options.get("awslogs-region") or region,
                  container=str(container.get("name") or ""))


class LogReader:
    def __init__(self, aws: AwsClients, *, missing_backoff: float = 2.0,
                 missing_backoff_cap: float = 60.0):
        self._aws = aws
        self.missing_backoff = missing_backoff
        self.missing_backoff_cap = missing_backoff_cap
        # (task definition ARN, container) -> awslogs target, None: no awslogs
        self._targets: dict[tuple[str, str], Target | None] = {}

    def learn(self, definition_arn: str, body: Mapping[str, Any], region: str) -> None:
        """Remember the log targets of a definition from the body it was registered with."""
        for container in body.get("containerDefinitions") or []:
            name = str(container.get("name") or "")
            self._targets[(definition_arn, name)] = target_of(container, region)

    async def read(self, conn: Connection, task_arn: str, cursor: str | None, *,
                   seen: Mapping[str, Any] | None, describe_task: DescribeTask,
                   may_call: Callable[[], bool], page_size: int) -> LogBatch:
        """One page after ``cursor``; no lines (and no call) until the stream can exist,
        ``LogBatch([], None)`` for tasks without awslogs.

        ``seen`` is the task as last read by a status call, if any; ``may_call`` spends
        the GetLogEvents budget (False: read on a later poll)."""
        if cursor:
            where = Cursor.decode(cursor)
            stopped = seen is not None and seen.get("lastStatus") == "STOPPED"
            if where.misses and time.time() < where.not_before and not stopped:
                return LogBatch([], cursor)
        else:
            found = await self._stream(conn, task_arn, seen or await describe_task())
            if found is None:
                return LogBatch([], None)
            where = found
        if not may_call():
            return LogBatch([], cursor)
        request: dict[str, Any] = {"logGroupName": where.group,
                                   "logStreamName": where.stream,
                                   "startFromHead": True, "limit": page_size}
        if where.token:
            request["nextToken"] = where.token
        try:
            answer = await self._aws.call(dataclasses.replace(conn, region=where.region),
                                          "logs", "get_log_events", **request)
        except PermanentProviderError as exc:
            if code_of(exc) != "ResourceNotFoundException":
                raise
            misses = where.misses + 1
            wait = min(self.missing_backoff_cap, self.missing_backoff * 2 ** (misses - 1))
            return LogBatch([], dataclasses.replace(
                where, misses=misses, not_before=time.time() + wait).encode())
        lines = [LogLine(datetime.fromtimestamp(e["timestamp"] / 1000, tz=UTC),
                         str(e.get("message", "")).rstrip("\n"))
                 for e in answer.get("events") or []]
        token = answer.get("nextForwardToken") or where.token
        return LogBatch(lines, dataclasses.replace(where, token=token, misses=0,
                                                   not_before=0.0).encode())

    async def _stream(self, conn: Connection, task_arn: str,
                      task: Mapping[str, Any] | None) -> Cursor | None:
        if task is None or not container_started(task):
            return None
        name = str((main_container(task) or {}).get("name") or "")
        definition_arn = str(task.get("taskDefinitionArn") or "")
        key = (definition_arn, name)
        if key not in self._targets:
            answer = await self._aws.call(conn, "ecs", "describe_task_definition",
                                          taskDefinition=definition_arn)
            definitions = answer["taskDefinition"].get("containerDefinitions") or []
            chosen = next((c for c in definitions if c.get("name") == name),
                          definitions[0] if definitions else {})
            target = target_of(chosen, str(conn.region))
            self._targets[key] = target and dataclasses.replace(
                target, container=target.container or name)
        target = self._targets[key]
        if target is None:
            return None
        stream = task_id(task_arn)
        if target.prefix:
            stream = f"{target.prefix}/{target.container}/{stream}"
        return Cursor(target.group, stream, target.region)
