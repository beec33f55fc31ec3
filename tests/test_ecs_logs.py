"""Reading a run's CloudWatch logs page by page (events put into moto by the test)."""

from __future__ import annotations

import time
from datetime import UTC

import pytest

from providers.base import InfraRef, LogBatch, PermanentProviderError
from providers.ecs import EcsProvider
from providers.ecs.events import parse_infra_id
from tests.fakes.ecs_testing import Aws, fast_settings

pytest_plugins = ["tests.ecs_fixtures"]


def put_lines(aws: Aws, group: str, stream: str, count: int, start: int = 0) -> None:
    logs = aws.client("logs")
    base = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
        {"timestamp": base + i, "message": f"line {i}\n"} for i in range(start, start + count)])


def start_container(aws: Aws, submission: InfraRef) -> str:
    """What Fargate does once the image is pulled: the task's container runs. Its id."""
    arn = parse_infra_id(submission.infra_id)[2]
    aws.server.set_outcome(arn, lastStatus="RUNNING", containers=[{"lastStatus": "RUNNING"}])
    return arn.rsplit("/", 1)[-1]


async def test_logs_are_read_in_pages_with_the_cursor(ecs_aws: Aws) -> None:
    provider = EcsProvider(fast_settings(log_page_size=10, log_missing_backoff=0.0))
    try:
        submission = await provider.submit(ecs_aws.spec())
        task = start_container(ecs_aws, submission)
        await provider.status(submission)  # as the watcher reads it before its logs
        # What the awslogs driver would write: <prefix>/<container>/<task id>.
        logs = ecs_aws.client("logs")
        logs.create_log_group(logGroupName="/pushpool/ecs")
        stream = f"pushpool/pushpool/{task}"

        empty = await provider.logs(submission, None)  # no stream yet
        assert empty.lines == [] and empty.cursor is not None

        logs.create_log_stream(logGroupName="/pushpool/ecs", logStreamName=stream)
        put_lines(ecs_aws, "/pushpool/ecs", stream, 25)
        seen: list[str] = []
        cursor: str | None = empty.cursor
        sizes = []
        for _ in range(4):
            batch = await provider.logs(submission, cursor)
            sizes.append(len(batch.lines))
            seen += [line.message for line in batch.lines]
            assert all(line.timestamp.tzinfo is UTC for line in batch.lines)
            cursor = batch.cursor
        assert sizes == [10, 10, 5, 0]
        assert seen == [f"line {i}" for i in range(25)]

        put_lines(ecs_aws, "/pushpool/ecs", stream, 3, start=25)
        more = await provider.logs(submission, cursor)
        assert [line.message for line in more.lines] == ["line 25", "line 26", "line 27"]
        # The definition's log configuration came with its registration; the task's
        # view from one DescribeTasks; the cursor carries the stream since.
        assert ecs_aws.server.calls("DescribeTasks") == 1
        assert ecs_aws.server.calls("DescribeTaskDefinition") == 1  # the lookup by hash
    finally:
        await provider.close()


async def test_no_log_read_before_the_container_starts(ecs_aws: Aws,
                                                       ecs_provider: EcsProvider) -> None:
    submission = await ecs_provider.submit(ecs_aws.spec())
    for _ in range(3):  # the task is there; its container is not running yet
        await ecs_provider.status(submission)
        assert await ecs_provider.logs(submission, None) == LogBatch([], None)
    assert ecs_aws.server.calls("GetLogEvents") == 0
    start_container(ecs_aws, submission)
    await ecs_provider.status(submission)
    assert (await ecs_provider.logs(submission, None)).cursor is not None
    assert ecs_aws.server.calls("GetLogEvents") == 1


async def test_a_stream_not_there_yet_is_looked_for_less_often(ecs_aws: Aws) -> None:
    provider = EcsProvider(fast_settings(log_missing_backoff=600.0))
    try:
        submission = await provider.submit(ecs_aws.spec())
        start_container(ecs_aws, submission)
        await provider.status(submission)
        cursor = (await provider.logs(submission, None)).cursor  # not found: wait now
        fresh = EcsProvider(fast_settings())  # the wait travels in the cursor
        try:
            for reader in (provider, provider, fresh):
                assert await reader.logs(submission, cursor) == LogBatch([], cursor)
        finally:
            await fresh.close()
        assert ecs_aws.server.calls("GetLogEvents") == 1

        # Stopped: read once more whatever the wait, for the last lines.
        arn = parse_infra_id(submission.infra_id)[2]
        ecs_aws.server.set_outcome(arn, lastStatus="STOPPED",
                                   containers=[{"exitCode": 0}])
        await provider.status(submission)
        await provider.logs(submission, cursor)
        assert ecs_aws.server.calls("GetLogEvents") == 2
    finally:
        await provider.close()


async def test_a_reader_that_did_not_submit_describes_a_definition_once(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    submissions = [await ecs_provider.submit(ecs_aws.spec()) for _ in range(3)]
    looked_up = ecs_aws.server.calls("DescribeTaskDefinition")
    reader = EcsProvider(fast_settings())  # a restarted server: only the references
    try:
        for submission in submissions:
            start_container(ecs_aws, submission)
        await reader.status_many(submissions)
        for submission in submissions:
            assert (await reader.logs(submission, None)).cursor is not None
    finally:
        await reader.close()
    assert ecs_aws.server.calls("DescribeTaskDefinition") - looked_up == 1


async def test_no_awslogs_means_no_logs(ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    config = ecs_aws.config(cloudwatch_logs={"enabled": False})
    submission = await ecs_provider.submit(ecs_aws.spec(config=config))
    batch = await ecs_provider.logs(submission, None)
    assert batch.lines == [] and batch.cursor is None


async def test_bad_cursor_is_a_clear_error(ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    submission = await ecs_provider.submit(ecs_aws.spec())
    with pytest.raises(PermanentProviderError, match="not an ECS log cursor"):
        await ecs_provider.logs(submission, "garbage")


async def test_log_reads_stay_within_their_budget(ecs_aws: Aws) -> None:
    provider = EcsProvider(fast_settings(log_read_rate=0.001, log_read_burst=2,
                                         log_missing_backoff=0.0))
    try:
        submission = await provider.submit(ecs_aws.spec())
        start_container(ecs_aws, submission)
        await provider.status(submission)
        first = await provider.logs(submission, None)
        ecs_aws.server.add_fault("GetLogEvents", "throttle")
        throttled = await provider.logs(submission, first.cursor)
        assert throttled.lines == [] and throttled.cursor == first.cursor
        skipped = await provider.logs(submission, first.cursor)  # budget spent
        assert skipped.lines == [] and skipped.cursor == first.cursor
        assert ecs_aws.server.calls("GetLogEvents") == 2
    finally:
        await provider.close()
