"""parse_task_state_change on EventBridge "ECS Task State Change" events, and the mapping."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from providers.base import InfraPhase
from providers.ecs.events import make_infra_id, parse_infra_id, parse_task_state_change
from tests.fakes.ecs_testing import Aws

pytest_plugins = ["tests.ecs_fixtures"]
ACCOUNT = "111122223333"
CLUSTER_ARN = f"arn:aws:ecs:us-west-2:{ACCOUNT}:cluster/flows"
TASK_ARN = f"arn:aws:ecs:us-west-2:{ACCOUNT}:task/flows/4e2b0f5c9b1a4f0d8a7c3e6f5d4c3b2a"
INFRA_ID = f"us-west-2::flows::{TASK_ARN}"


def stopped_event(**detail: Any) -> dict[str, Any]:
    """An event shaped like the ones ECS sends (fields as in AWS's documented example)."""
    event: dict[str, Any] = {
        "version": "0",
        "id": "8f07b2f7-9fb2-4e37-8d9c-1c6f5e1e7b21",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": ACCOUNT,
        "time": "2026-11-26T10:15:03Z",
        "region": "us-west-2",
        "resources": [TASK_ARN],
        "detail": {
            "attachments": [{"id": "1789bcae-ddfb-4d10-8ebe-8ac87ddba5b8",
                             "type": "eni", "status": "DELETED",
                             "details": [{"name": "subnetId", "value": "subnet-abcd1234"}]}],
            "availabilityZone": "us-west-2c",
            "clusterArn": CLUSTER_ARN,
            "containers": [{
                "containerArn": f"arn:aws:ecs:us-west-2:{ACCOUNT}:container/flows/4e2b/a1b2",
                "exitCode": 0,
                "lastStatus": "STOPPED",
                "name": "pushpool",
                "image": "ghcr.io/example/flows:1",
                "taskArn": TASK_ARN,
                "networkInterfaces": [{"attachmentId": "1789bcae",
                                       "privateIpv4Address": "10.0.1.7"}],
                "cpu": "0",
            }],
            "cpu": "1024",
            "memory": "2048",
            "createdAt": "2026-11-26T10:13:41.201Z",
            "desiredStatus": "STOPPED",
            "enableExecuteCommand": False,
            "ephemeralStorage": {"sizeInGiB": 20},
            "group": "family:pushpool-ecs-pool-0053149d8f72eeff",
            "launchType": "FARGATE",
            "lastStatus": "STOPPED",
            "overrides": {"containerOverrides": [{
                "name": "pushpool", "command": ["python", "-m", "flows.hello"],
                "environment": [{"name": "PUSHPOOL_RUN_ID", "value": "run-7"}]}]},
            "platformVersion": "1.4.0",
            "pullStartedAt": "2026-11-26T10:13:55.102Z",
            "pullStoppedAt": "2026-11-26T10:14:08.937Z",
            "startedAt": "2026-11-26T10:14:11.432Z",
            "startedBy": "pushpool/run-7",
            "stoppingAt": "2026-11-26T10:14:52.020Z",
            "stoppedAt": "2026-11-26T10:15:03.118Z",
            "stoppedReason": "Essential container in task exited",
            "stopCode": "EssentialContainerExited",
            "taskArn": TASK_ARN,
            "taskDefinitionArn": (f"arn:aws:ecs:us-west-2:{ACCOUNT}:task-definition/"
                                  "pushpool-ecs-pool-0053149d8f72eeff:1"),
            "updatedAt": "2026-11-26T10:15:03.118Z",
            "version": 6,
        },
    }
    for key, value in detail.items():
        if value is None:
            event["detail"].pop(key, None)
        else:
            event["detail"][key] = value
    return event


def with_container(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    event = copy.deepcopy(event)
    container = event["detail"]["containers"][0]
    for key, value in fields.items():
        if value is None:
            container.pop(key, None)
        else:
            container[key] = value
    return event


def test_exit_zero_is_succeeded() -> None:
    infra_id, status = parse_task_state_change(stopped_event()) or ("", None)
    assert infra_id == INFRA_ID
    assert status is not None and status.phase is InfraPhase.SUCCEEDED and status.exit_code == 0


def test_non_zero_exit_is_failed_with_the_code() -> None:
    event = with_container(stopped_event(), exitCode=3)
    _, status = parse_task_state_change(event)  # type: ignore[misc]
    assert status.phase is InfraPhase.FAILED and status.exit_code == 3
    assert "exited with code 3" in (status.reason or "")


def test_running_and_pending_events() -> None:
    running = stopped_event(lastStatus="RUNNING", desiredStatus="RUNNING", stopCode=None,
                            stoppedReason=None, stoppedAt=None)
    running = with_container(running, exitCode=None, lastStatus="RUNNING")
    assert parse_task_state_change(running)[1].phase is InfraPhase.RUNNING  # type: ignore[index]
    provisioning = stopped_event(lastStatus="PROVISIONING", desiredStatus="RUNNING",
                                 stopCode=None, stoppedReason=None)
    provisioning = with_container(provisioning, exitCode=None, lastStatus="PENDING")
    phase = parse_task_state_change(provisioning)[1].phase  # type: ignore[index]
    assert phase is InfraPhase.PENDING


def test_task_failed_to_start_with_no_containers_is_crashed_with_aws_reason() -> None:
    reason = ("ResourceInitializationError: unable to pull secrets or registry auth: "
              "execution resource retrieval failed")
    event = stopped_event(stopCode="TaskFailedToStart", stoppedReason=reason, containers=[])
    _, status = parse_task_state_change(event)  # type: ignore[misc]
    assert status.phase is InfraPhase.CRASHED and status.exit_code is None
    assert reason in (status.reason or "") and "TaskFailedToStart" in (status.reason or "")


def test_cannot_pull_image_is_crashed() -> None:
    reason = ("CannotPullContainerError: pull image manifest has been retried 5 time(s): "
              "ghcr.io/example/flows:404: not found")
    event = stopped_event(stopCode="TaskFailedToStart", stoppedReason=reason)
    event = with_container(event, exitCode=None, reason=reason)
    _, status = parse_task_state_change(event)  # type: ignore[misc]
    assert status.phase is InfraPhase.CRASHED and "CannotPullContainerError" in (
        status.reason or "")


def test_out_of_memory_is_crashed_with_its_exit_code() -> None:
    event = with_container(stopped_event(), exitCode=137,
                           reason="OutOfMemoryError: Container killed due to memory usage")
    _, status = parse_task_state_change(event)  # type: ignore[misc]
    assert status.phase is InfraPhase.CRASHED and status.exit_code == 137
    assert "OutOfMemoryError" in (status.reason or "")


def test_spot_interruption_is_crashed() -> None:
    event = stopped_event(stopCode="SpotInterruption",
                          stoppedReason="Your Spot Task was interrupted.")
    event = with_container(event, exitCode=None)
    _, status = parse_task_state_change(event)  # type: ignore[misc]
    assert status.phase is InfraPhase.CRASHED
    assert "Spot" in (status.reason or "") and "interrupted" in (status.reason or "")


def test_user_stop_is_cancelled() -> None:
    event = stopped_event(stopCode="UserInitiated", stoppedReason="Cancelled by pushpool")
    event = with_container(event, exitCode=143)
    _, status = parse_task_state_change(event)  # type: ignore[misc]
    assert status.phase is InfraPhase.CANCELLED and "Cancelled by pushpool" in (
        status.reason or "")


def test_main_container_is_the_overridden_one_not_a_sidecar() -> None:
    event = stopped_event()
    sidecar = {**event["detail"]["containers"][0], "name": "log-router", "exitCode": 143}
    event["detail"]["containers"].insert(0, sidecar)
    _, status = parse_task_state_change(event)  # type: ignore[misc]
    assert status.phase is InfraPhase.SUCCEEDED


def test_not_ours_or_not_a_task_event_is_none() -> None:
    assert parse_task_state_change(stopped_event(startedBy="ecs-svc/1234567890")) is None
    assert parse_task_state_change(stopped_event(startedBy=None)) is None
    other = {**stopped_event(), "detail-type": "ECS Container Instance State Change"}
    assert parse_task_state_change(other) is None
    assert parse_task_state_change({**stopped_event(), "source": "my.app"}) is None
    assert parse_task_state_change({"detail": "nope"}) is None
    assert parse_task_state_change([]) is None  # type: ignore[arg-type]


def test_infra_id_round_trip() -> None:
    assert make_infra_id("us-west-2", CLUSTER_ARN, TASK_ARN) == INFRA_ID
    assert parse_infra_id(INFRA_ID) == ("us-west-2", "flows", TASK_ARN)


def test_event_routed_by_eventbridge_parses(ecs_aws: Aws) -> None:
    aws = ecs_aws
    """An event delivered by a real rule -> SQS path (moto's EventBridge) parses as sent."""
    events, sqs = aws.client("events"), aws.client("sqs")
    queue = sqs.create_queue(QueueName="ecs-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    events.put_rule(Name="pushpool-ecs", EventPattern=json.dumps({
        "source": ["aws.ecs"], "detail-type": ["ECS Task State Change"]}))
    events.put_targets(Rule="pushpool-ecs", Targets=[{"Id": "q", "Arn": queue_arn}])
    detail = with_container(stopped_event(), exitCode=2)["detail"]
    events.put_events(Entries=[{"Source": "aws.ecs", "DetailType": "ECS Task State Change",
                                "Detail": json.dumps(detail), "Resources": [TASK_ARN]}])
    deadline = time.monotonic() + 10
    messages: list[dict[str, Any]] = []
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages", [])
    assert messages, "EventBridge did not deliver the event"
    delivered = json.loads(messages[0]["Body"])
    assert delivered["detail-type"] == "ECS Task State Change"
    infra_id, status = parse_task_state_change(delivered)  # type: ignore[misc]
    assert infra_id == make_infra_id(delivered["region"], CLUSTER_ARN, TASK_ARN)
    assert status.phase is InfraPhase.FAILED and status.exit_code == 2
