"""cloud-run:push status, cancel and logs against the fake: every lifecycle the fake can
play, transient errors that must change nothing, and the log cursor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from providers.base import InfraPhase, InfraRef, RetryableProviderError
from providers.cloud_run import CloudRunProvider
from tests.conftest import wait_for
from tests.fakes.cloud_run import FakeGoogle, shared_fake
from tests.providers.cloud_run_harness import make_provider, mapping_cases, spec_for


@pytest.fixture
def fake() -> FakeGoogle:
    made = shared_fake()
    made.reset()
    return made


@pytest.fixture
async def provider(fake: FakeGoogle) -> AsyncIterator[CloudRunProvider]:
    made = make_provider()
    yield made
    await made.close()


async def _submit(fake: FakeGoogle, provider: CloudRunProvider, run_id: str) -> InfraRef:
    return await provider.submit(spec_for(fake, run_id))


async def test_every_documented_mapping() -> None:
    for case in mapping_cases():
        assert case.status.phase is case.expected, case.native
    failed = next(c for c in mapping_cases() if c.native.endswith("exit 3"))
    assert failed.status.exit_code == 3 and "exit code 3" in (failed.status.reason or "")


async def test_the_lifecycle_through_the_api(fake: FakeGoogle,
                                             provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "life-1")
    assert (await provider.status(ref)).phase is InfraPhase.PENDING
    fake.run.start(ref.infra_id)
    assert (await provider.status(ref)).phase is InfraPhase.RUNNING
    fake.run.succeed(ref.infra_id)
    assert (await provider.status(ref)).phase is InfraPhase.SUCCEEDED


async def test_a_failed_task_gives_its_exit_code(fake: FakeGoogle,
                                                 provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "fail-1")
    fake.run.start(ref.infra_id)
    fake.run.fail(ref.infra_id, 42)
    status = await provider.status(ref)
    assert status.phase is InfraPhase.FAILED and status.exit_code == 42
    assert "exit code 42" in (status.reason or "")
    assert fake.server.calls["tasks.list"] == 1


async def test_an_execution_that_failed_to_start_is_crashed_with_googles_message(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "nostart-1")
    message = ("Permission denied on secret: projects/p/secrets/api-key for Revision "
               "service account runner@p.iam.gserviceaccount.com.")
    fake.run.fail_to_start(ref.infra_id, message)
    status = await provider.status(ref)
    assert status.phase is InfraPhase.CRASHED and message in (status.reason or "")


async def test_a_vanished_execution_is_missing_with_the_reason(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "gone-1")
    fake.run.start(ref.infra_id)
    fake.run.vanish(ref.infra_id)
    status = await provider.status(ref)
    assert status.phase is InfraPhase.MISSING and "no execution" in (status.reason or "")


async def test_a_503_or_429_while_reading_status_changes_nothing(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    running = await _submit(fake, provider, "flaky-1")
    other = await _submit(fake, provider, "flaky-2")
    fake.run.start(running.infra_id)
    fake.run.start(other.infra_id)
    # Two failures: the read's own retry and then the caller see it.
    fake.server.fail_next("executions.get", 503, "The service is currently unavailable.",
                          times=2)
    with pytest.raises(RetryableProviderError):
        await provider.status(running)
    fake.server.fail_next("executions.get", 429, "Quota exceeded for read requests.")
    many = await provider.status_many([running, other])
    # Whichever read was throttled is left out (ask again later); the other is read.
    assert len(many) == 1 and all(s.phase is InfraPhase.RUNNING for s in many.values())
    fake.server.fail_next("executions.get", 503, "unavailable", times=10)
    with pytest.raises(RetryableProviderError):
        await provider.status_many([running, other])  # nothing read: the error, no phase
    fake.server.clear_faults()
    assert (await provider.status(running)).phase is InfraPhase.RUNNING


async def test_a_503_reading_the_tasks_never_invents_a_final_state(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "tasks-1")
    calm = await _submit(fake, provider, "tasks-2")
    fake.run.fail(ref.infra_id, 7)
    fake.server.fail_next("tasks.list", 503, "unavailable", times=2)
    many = await provider.status_many([ref, calm])
    assert ref.infra_id not in many and many[calm.infra_id].phase is InfraPhase.PENDING
    status = await provider.status(ref)
    assert (status.phase, status.exit_code) == (InfraPhase.FAILED, 7)


async def test_cancel_stops_the_execution_and_ends_its_operation(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "cancel-1")
    fake.run.start(ref.infra_id)
    await provider.cancel(ref, grace_seconds=1)
    assert (await provider.status(ref)).phase is InfraPhase.CANCELLED
    ops = [op for op in fake.run.operations.values() if op.get("_execution") == ref.infra_id]
    assert ops and all(op["done"] and "error" not in op for op in ops)
    await provider.cancel(ref)  # already finished: nothing to do
    fake.run.vanish(ref.infra_id)
    await provider.cancel(ref)  # gone: nothing to do
    assert fake.server.calls["executions.cancel"] == 3


async def test_cancel_of_an_unreachable_execution_raises(fake: FakeGoogle,
                                                         provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "cancel-2")
    fake.server.fail_next("executions.cancel", 503, "unavailable")
    with pytest.raises(RetryableProviderError):
        await provider.cancel(ref)


# ---------------------------------------------------------------------------- logs


async def _read_all(provider: CloudRunProvider, ref: InfraRef,
                    cursor: str | None = None) -> tuple[list[str], str | None]:
    batch = await provider.logs(ref, cursor)
    return [line.message for line in batch.lines], batch.cursor


async def test_logs_in_order_and_a_cursor_never_repeats(fake: FakeGoogle,
                                                        provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "logs-1")
    execution = fake.run.executions[ref.infra_id]
    assert await _read_all(provider, ref) == ([], None)
    fake.logging.write(execution, ["one", "two"])
    fake.logging.write(execution, ["oops"], stream="stderr")
    lines, cursor = await _read_all(provider, ref)
    assert lines == ["one", "two", "oops"]
    assert await _read_all(provider, ref, cursor) == ([], cursor)
    # Entries sharing one timestamp: none lost, none repeated.
    stamp = datetime.now(UTC)
    fake.logging.write(execution, ["a", "b"], timestamp=stamp)
    first, cursor = await _read_all(provider, ref, cursor)
    fake.logging.write(execution, ["c"], timestamp=stamp)
    second, cursor = await _read_all(provider, ref, cursor)
    assert sorted(first + second) == ["a", "b", "c"] and len(first + second) == 3
    batch = await provider.logs(ref, cursor)
    assert batch.lines == []
    # Another execution's lines never show up here.
    other = await _submit(fake, provider, "logs-2")
    fake.logging.write(fake.run.executions[other.infra_id], ["elsewhere"])
    assert (await provider.logs(ref, cursor)).lines == []


async def test_stderr_is_marked_and_a_bad_cursor_is_refused(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "logs-3")
    fake.logging.write(fake.run.executions[ref.infra_id], ["bad"], stream="stderr")
    batch = await provider.logs(ref, None)
    assert [(line.message, line.stream) for line in batch.lines] == [("bad", "stderr")]
    with pytest.raises(ValueError, match="cursor"):
        await provider.logs(ref, "not-a-cursor")


async def test_log_reads_stay_within_their_budget(fake: FakeGoogle) -> None:
    provider = make_provider(log_read_rate=0.01, log_read_burst=1.0)
    try:
        ref = await provider.submit(spec_for(fake, "logs-4"))
        fake.logging.write(fake.run.executions[ref.infra_id], ["x"])
        first = await provider.logs(ref, None)
        skipped = await provider.logs(ref, first.cursor)
        assert [line.message for line in first.lines] == ["x"]
        assert skipped.lines == [] and skipped.cursor == first.cursor
        assert fake.server.calls["entries.list"] == 1
    finally:
        await provider.close()


async def test_a_throttled_log_read_returns_no_lines(fake: FakeGoogle,
                                                     provider: CloudRunProvider) -> None:
    ref = await _submit(fake, provider, "logs-5")
    fake.server.fail_next("entries.list", 429, "Quota exceeded for ReadRequestsPerMinute.")
    assert (await provider.logs(ref, None)).lines == []


async def test_the_event_loop_stays_free_while_google_answers(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    refs = await asyncio.gather(*(_submit(fake, provider, f"loop-{i}") for i in range(20)))
    await provider.status_many(refs)
    stop.set()
    await task
    assert ticks > 5
    await wait_for(lambda: len(fake.run.executions) == 20, what="20 executions")


async def test_a_pass_over_many_runs_of_a_job_lists_its_executions_once(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    refs = [await _submit(fake, provider, f"many-{i}") for i in range(6)]
    for ref in refs[:4]:
        fake.run.start(ref.infra_id)
    fake.run.succeed(refs[1].infra_id)
    fake.run.fail(refs[2].infra_id, 7)  # its exit code is on its tasks: read on its own
    before = dict(fake.server.calls)
    many = await provider.status_many(refs)
    calls = {k: v - before.get(k, 0) for k, v in fake.server.calls.items()}
    assert calls.get("executions.list") == 1 and calls.get("executions.get") == 1
    assert [many[r.infra_id].phase for r in refs] == [
        InfraPhase.RUNNING, InfraPhase.SUCCEEDED, InfraPhase.FAILED, InfraPhase.RUNNING,
        InfraPhase.PENDING, InfraPhase.PENDING]
    assert many[refs[2].infra_id].exit_code == 7
    # The same answers as one read each.
    for ref in refs:
        assert (await provider.status(ref)).phase is many[ref.infra_id].phase


async def test_a_throttled_listing_leaves_its_runs_out_and_changes_nothing(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    refs = [await _submit(fake, provider, f"list-429-{i}") for i in range(3)]
    for ref in refs:
        fake.run.start(ref.infra_id)
    fake.server.fail_next("executions.list", 429, "Quota exceeded for read requests.")
    with pytest.raises(RetryableProviderError):
        await provider.status_many(refs)  # nothing read: the error, no phase
    many = await provider.status_many(refs)
    assert all(s.phase is InfraPhase.RUNNING for s in many.values()) and len(many) == 3
