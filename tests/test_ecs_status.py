"""Status, batching, cancel and cleanup against moto (outcomes set through the proxy)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.base import InfraPhase, InfraRef, RetryableProviderError
from providers.ecs import EcsProvider
from providers.ecs.events import make_infra_id, parse_infra_id
from tests.fakes.ecs_testing import CLUSTER, Aws, fast_settings

pytest_plugins = ["tests.ecs_fixtures"]

PULL_ERROR = ("CannotPullContainerError: pull image manifest has been retried 1 time(s): "
              "failed to resolve ref ghcr.io/example/flows:404: not found")
INIT_ERROR = ("ResourceInitializationError: unable to pull secrets or registry auth: "
              "execution resource retrieval failed: unable to retrieve ecr registry auth")


async def submit_task(aws: Aws, provider: EcsProvider, run_id: str | None = None,
                      **config: Any) -> tuple[InfraRef, str]:
    submission = await provider.submit(aws.spec(run_id, config=aws.config(**config)))
    return submission, parse_infra_id(submission.infra_id)[2]


@pytest.mark.parametrize(("outcome", "phase", "exit_code", "reason_has"), [
    ({}, InfraPhase.RUNNING, None, None),
    ({"lastStatus": "PROVISIONING"}, InfraPhase.PENDING, None, None),
    ({"lastStatus": "STOPPED", "stopCode": "EssentialContainerExited",
      "stoppedReason": "Essential container in task exited", "containers": [{"exitCode": 0}]},
     InfraPhase.SUCCEEDED, 0, None),
    ({"lastStatus": "STOPPED", "stopCode": "EssentialContainerExited",
      "stoppedReason": "Essential container in task exited", "containers": [{"exitCode": 3}]},
     InfraPhase.FAILED, 3, "exited with code 3"),
    ({"lastStatus": "STOPPED", "stopCode": "TaskFailedToStart", "stoppedReason": INIT_ERROR,
      "noContainers": True}, InfraPhase.CRASHED, None, INIT_ERROR),
    ({"lastStatus": "STOPPED", "stopCode": "TaskFailedToStart", "stoppedReason": PULL_ERROR,
      "containers": [{"exitCode": None, "reason": PULL_ERROR}]},
     InfraPhase.CRASHED, None, "CannotPullContainerError"),
    ({"lastStatus": "STOPPED", "stopCode": "EssentialContainerExited",
      "stoppedReason": "Essential container in task exited",
      "containers": [{"exitCode": 137,
                      "reason": "OutOfMemoryError: Container killed due to memory usage"}]},
     InfraPhase.CRASHED, 137, "OutOfMemoryError"),
    ({"lastStatus": "STOPPED", "stopCode": "SpotInterruption",
      "stoppedReason": "Your Spot Task was interrupted.", "containers": [{"exitCode": None}]},
     InfraPhase.CRASHED, None, "Spot Task was interrupted"),
])
async def test_task_states_map_to_phases(ecs_aws: Aws, ecs_provider: EcsProvider,
                                         outcome: dict[str, Any], phase: InfraPhase,
                                         exit_code: int | None, reason_has: str | None) -> None:
    infra_id, task_arn = await submit_task(ecs_aws, ecs_provider)
    if outcome:
        ecs_aws.server.set_outcome(task_arn, **outcome)
    status = await ecs_provider.status(infra_id)
    assert (status.phase, status.exit_code) == (phase, exit_code)
    if reason_has:
        assert reason_has in (status.reason or "")


async def test_missing_task_is_crashed_unless_just_submitted(ecs_aws: Aws,
                                                             ecs_provider: EcsProvider) -> None:
    infra_id, task_arn = await submit_task(ecs_aws, ecs_provider)
    ecs_aws.server.forget_task(task_arn)
    # Right after RunTask, ECS's reads may lag: not a crash yet.
    assert (await ecs_provider.status(infra_id)).phase is InfraPhase.PENDING
    later = EcsProvider(fast_settings(missing_grace_seconds=0))
    try:
        status = await later.status(infra_id)
    finally:
        await later.close()
    # MISSING, which the run state machine ends as CRASHED with this reason.
    assert status.phase is InfraPhase.MISSING and "MISSING" in (status.reason or "")


async def test_moto_lifecycle_to_stopped_is_success(ecs_aws: Aws,
                                                    ecs_provider: EcsProvider) -> None:
    infra_id, _ = await submit_task(ecs_aws, ecs_provider)
    ecs_aws.server.set_transition("ecs::task", {"progression": "immediate"})
    status = await ecs_provider.status(infra_id)
    assert status.phase is InfraPhase.SUCCEEDED and status.exit_code == 0


async def test_status_many_batches_describe_calls_per_cluster(ecs_aws: Aws) -> None:
    ecs_aws.client("ecs").create_cluster(clusterName="second")
    provider = EcsProvider(fast_settings(run_task_rate=5000, run_task_burst=5000))
    try:
        ids = [(await submit_task(ecs_aws, provider))[0] for _ in range(103)]
        ids += [(await submit_task(ecs_aws, provider, cluster="second"))[0] for _ in range(2)]
        ids.append(InfraRef("not-an-infra-id"))
        before = ecs_aws.server.calls("DescribeTasks")
        statuses = await provider.status_many(ids)
    finally:
        await provider.close()
    assert ecs_aws.server.calls("DescribeTasks") - before == 3  # 100 + 3, and 2
    assert set(statuses) == {i.infra_id for i in ids}
    assert all(statuses[i.infra_id].phase is InfraPhase.RUNNING for i in ids[:-1])
    assert statuses["not-an-infra-id"].phase is InfraPhase.CRASHED


async def test_transient_errors_leave_ids_out_and_raise_when_nothing_answered(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    ecs_aws.client("ecs").create_cluster(clusterName="second")
    first, _ = await submit_task(ecs_aws, ecs_provider)
    second, _ = await submit_task(ecs_aws, ecs_provider, cluster="second")
    ecs_aws.server.add_fault("DescribeTasks", "throttle", times=1)
    statuses = await ecs_provider.status_many([first, second])
    assert len(statuses) == 1 and next(iter(statuses.values())).phase is InfraPhase.RUNNING
    ecs_aws.server.add_fault("DescribeTasks", "503")
    with pytest.raises(RetryableProviderError):
        await ecs_provider.status_many([first, second])


async def test_deleted_cluster_means_crashed(ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    infra_id = make_infra_id("us-east-1", "gone-cluster",
                             "arn:aws:ecs:us-east-1:123456789012:task/gone-cluster/abc")
    status = await ecs_provider.status(InfraRef(infra_id))
    assert status.phase is InfraPhase.CRASHED and "ClusterNotFoundException" in (
        status.reason or "")


async def test_status_after_restart_reaches_the_task_through_the_stored_reference(
        ecs_aws: Aws, ecs_provider: EcsProvider, monkeypatch: Any) -> None:
    submission, _ = await submit_task(ecs_aws, ecs_provider)
    stored = InfraRef.from_json(json.loads(json.dumps(submission.to_json())))  # as the store
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    restarted = EcsProvider(fast_settings())  # a fresh process: no earlier call
    try:
        with pytest.raises(RetryableProviderError, match="could not reach AWS"):
            await restarted.status(InfraRef(stored.infra_id))  # no connection: nowhere
        assert (await restarted.status(stored)).phase is InfraPhase.RUNNING
        await restarted.cancel(stored)
        assert (await restarted.status(stored)).phase is InfraPhase.CANCELLED
        assert (await restarted.logs(stored, None)).lines == []
    finally:
        await restarted.close()


async def test_cancel_stops_the_task_and_reads_as_cancelled(ecs_aws: Aws,
                                                            ecs_provider: EcsProvider) -> None:
    infra_id, task_arn = await submit_task(ecs_aws, ecs_provider)
    await ecs_provider.cancel(infra_id)
    task = ecs_aws.client("ecs").describe_tasks(cluster=CLUSTER, tasks=[task_arn])["tasks"][0]
    assert task["desiredStatus"] == "STOPPED"
    assert task["stoppedReason"] == "Cancelled by pushpool"
    status = await ecs_provider.status(infra_id)
    assert status.phase is InfraPhase.CANCELLED and "Cancelled by pushpool" in (
        status.reason or "")


async def test_cancel_of_a_gone_task_is_no_error(ecs_aws: Aws,
                                                 ecs_provider: EcsProvider) -> None:
    infra_id, task_arn = await submit_task(ecs_aws, ecs_provider)
    ecs_aws.server.forget_task(task_arn)
    await ecs_provider.cancel(infra_id)
    await ecs_provider.cancel(InfraRef(make_infra_id(
        "us-east-1", "gone-cluster", "arn:aws:ecs:us-east-1:123456789012:task/gone-cluster/x")))
    assert ecs_aws.server.calls("StopTask") == 2


async def test_cleanup_deregisters_marked_definition_once_no_run_uses_it(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    first, _ = await submit_task(ecs_aws, ecs_provider, auto_deregister_task_definition=True)
    second, _ = await submit_task(ecs_aws, ecs_provider, auto_deregister_task_definition=True)
    [definition] = ecs_aws.task_definitions()
    ecs = ecs_aws.client("ecs")

    def status_of() -> str:
        answer = ecs.describe_task_definition(taskDefinition=definition)
        return str(answer["taskDefinition"]["status"])

    await ecs_provider.cancel(first)
    await ecs_provider.cleanup(first)
    assert status_of() == "ACTIVE"  # the second run still uses it
    await ecs_provider.cancel(second)
    await ecs_provider.cleanup(second)
    assert status_of() == "INACTIVE"
    await ecs_provider.cleanup(second)  # twice is fine

    await submit_task(ecs_aws, ecs_provider, auto_deregister_task_definition=True)
    assert ecs_aws.server.calls("RegisterTaskDefinition") == 2


async def test_cleanup_keeps_unmarked_definitions(ecs_aws: Aws,
                                                  ecs_provider: EcsProvider) -> None:
    infra_id, _ = await submit_task(ecs_aws, ecs_provider)
    await ecs_provider.cancel(infra_id)
    await ecs_provider.cleanup(infra_id)
    assert ecs_aws.server.calls("DeregisterTaskDefinition") == 0


async def test_cleanup_of_a_pool_that_keeps_definitions_makes_no_call(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    submission, _ = await submit_task(ecs_aws, ecs_provider)
    await ecs_provider.cancel(submission)
    before = sum(a["received"] for a in ecs_aws.server.stats()["actions"].values())
    stored = InfraRef.from_json(json.loads(json.dumps(submission.to_json())))
    await EcsProvider(fast_settings()).cleanup(stored)  # any process, the reference alone
    await ecs_provider.cleanup(submission)
    after = sum(a["received"] for a in ecs_aws.server.stats()["actions"].values())
    assert after - before == 0
