"""A run's logs: its awslogs stream in CloudWatch Logs, read page by page.

The stream is ``<awslogs-stream-prefix>/<container>/<task id>`` in the group named by the
task definition's log configuration. The cursor handed back is opaque JSON carrying the
group, stream, region and GetLogEvents' forward token, so only the first read needs
DescribeTasks and DescribeTaskDefinition.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from providers.base import LogBatch, LogLine, PermanentProviderError
from providers.ecs.aws import AwsClients, Connection, code_of
from providers.ecs.events import main_container, task_id

DescribeTask = Callable[[], Awaitable[Mapping[str, Any] | None]]


class LogReader:
    def __init__(self, aws: AwsClients):
        self._aws = aws
        # (task definition ARN, container) -> awslogs group/prefix/region, None: no awslogs
        self._targets: dict[tuple[str, str], dict[str, str] | None] = {}

    async def read(self, conn: Connection, task_arn: str, cursor: str | None,
                   describe_task: DescribeTask, page_size: int) -> LogBatch:
        """One page after ``cursor``; no lines (same cursor) while the stream does not
        exist yet, and ``LogBatch([], None)`` for tasks without awslogs."""
        if cursor:
            try:
                target = json.loads(cursor)
                group, stream, region = target["g"], target["s"], target["r"]
            except (ValueError, KeyError, TypeError):
                raise PermanentProviderError(f"not an ECS log cursor: {cursor!r}") from None
            token = target.get("t")
        else:
            found = await self._stream(conn, task_arn, describe_task)
            if found is None:
                return LogBatch([], None)
            group, stream, region = found
            token = None

        def encode(next_token: str | None) -> str:
            return json.dumps({"g": group, "s": stream, "r": region, "t": next_token},
                              separators=(",", ":"))

        request: dict[str, Any] = {"logGroupName": group, "logStreamName": stream,
                                   "startFromHead": True, "limit": page_size}
        if token:
            request["nextToken"] = token
        try:
            answer = await self._aws.call(dataclasses.replace(conn, region=region), "logs",
                                          "get_log_events", **request)
        except PermanentProviderError as exc:
            if code_of(exc) == "ResourceNotFoundException":
                return LogBatch([], encode(token))
            raise
        lines = [LogLine(datetime.fromtimestamp(e["timestamp"] / 1000, tz=UTC),
                         str(e.get("message", "")).rstrip("\n"))
                 for e in answer.get("events") or []]
        return LogBatch(lines, encode(answer.get("nextForwardToken") or token))

    async def _stream(self, conn: Connection, task_arn: str,
                      describe_task: DescribeTask) -> tuple[str, str, str] | None:
        task = await describe_task()
        if task is None:
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
            log_config = chosen.get("logConfiguration") or {}
            options = log_config.get("options") or {}
            if log_config.get("logDriver") != "awslogs" or "awslogs-group" not in options:
                self._targets[key] = None
            else:
                self._targets[key] = {
                    "group": options["awslogs-group"],
                    "prefix": options.get("awslogs-stream-prefix", ""),
                    "region": options.get("awslogs-region") or str(conn.region),
                    "container": str(chosen.get("name") or name)}
        target = self._targets[key]
        if target is None:
            return None
        stream = task_id(task_arn)
        if target["prefix"]:
            stream = f"{target['prefix']}/{target['container']}/{stream}"
        return target["group"], stream, target["region"]
