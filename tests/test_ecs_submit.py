"""Submitting runs to ECS (moto behind the proxy): requests, idempotency, throttling, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from providers.base import InfraRef, JobSpec, PermanentProviderError, RetryableProviderError
from providers.ecs import EcsProvider, client_token
from providers.ecs.events import parse_infra_id
from tests.fakes.ecs_testing import CLUSTER, EXECUTION_ROLE, Aws, fast_settings

pytest_plugins = ["tests.ecs_fixtures"]


async def submit_like_the_dispatcher(provider: EcsProvider, spec: JobSpec,
                                     attempts: int = 20) -> InfraRef:
    """Retry RetryableProviderError as the dispatcher does (within the run's lease)."""
    for attempt in range(1, attempts + 1):
        try:
            return await provider.submit(spec)
        except RetryableProviderError:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.01)
    raise AssertionError("unreachable")


def created(aws: Aws) -> list[dict[str, Any]]:
    return [r for r in aws.server.run_tasks() if r["outcome"] == "created"]


async def test_submit_sends_run_identity_network_and_logs(ecs_aws: Aws,
                                                          ecs_provider: EcsProvider) -> None:
    spec = ecs_aws.spec("run-1", env={"PUSHPOOL_RUN_ID": "run-1", "DROP": None},
                        labels={"pushpool.io/deployment": "etl"})
    submission = await ecs_provider.submit(spec)

    region, cluster, task_arn = parse_infra_id(submission.infra_id)
    assert (region, cluster) == ("us-east-1", CLUSTER)
    assert submission.console_url == (
        f"https://us-east-1.console.aws.amazon.com/ecs/v2/clusters/{CLUSTER}/tasks/"
        f"{task_arn.rsplit('/', 1)[-1]}/configuration?region=us-east-1")
    [record] = ecs_aws.server.run_tasks()
    request = record["request"]
    assert request["clientToken"] == client_token("run-1", 1) == "pushpool-run-1-1"
    assert request["startedBy"] == "pushpool/run-1"
    assert request["launchType"] == "FARGATE"
    tags = {t["key"]: t["value"] for t in request["tags"]}
    assert tags["pushpool:run-id"] == "run-1" and tags["pushpool:pool"] == "ecs-pool"
    assert tags["pushpool:deployment-id"] == "dep-1"
    assert tags["pushpool.io/deployment"] == "etl"
    [override] = request["overrides"]["containerOverrides"]
    assert override == {"name": "pushpool", "command": ["python", "-m", "flows.hello"],
                        "environment": [{"name": "PUSHPOOL_RUN_ID", "value": "run-1"}]}
    ec2 = ecs_aws.client("ec2")
    default_subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=[
        {"Name": "default-for-az", "Values": ["true"]}])["Subnets"])
    default_group = ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]["GroupId"]
    assert request["networkConfiguration"]["awsvpcConfiguration"] == {
        "subnets": default_subnets, "securityGroups": [default_group],
        "assignPublicIp": "ENABLED"}

    definition = ecs_aws.client("ecs").describe_task_definition(
        taskDefinition=request["taskDefinition"])["taskDefinition"]
    assert (definition["cpu"], definition["memory"]) == ("1024", "2048")
    assert definition["networkMode"] == "awsvpc"
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert definition["executionRoleArn"] == EXECUTION_ROLE
    [container] = definition["containerDefinitions"]
    assert container["image"] == "ghcr.io/example/flows:1"
    assert container["logConfiguration"] == {"logDriver": "awslogs", "options": {
        "awslogs-group": "/pushpool/ecs", "awslogs-region": "us-east-1",
        "awslogs-stream-prefix": "pushpool", "awslogs-create-group": "true"}}


async def test_two_hundred_runs_register_one_task_definition(ecs_aws: Aws) -> None:
    provider = EcsProvider(fast_settings(run_task_rate=5000, run_task_burst=5000))
    try:
        specs = [ecs_aws.spec(f"run-{i}") for i in range(200)]
        submissions = await asyncio.gather(*(provider.submit(s) for s in specs))
        assert len({s.infra_id for s in submissions}) == 200
        assert ecs_aws.server.calls("RegisterTaskDefinition") == 1
        assert len(ecs_aws.task_definitions()) == 1
        assert len(ecs_aws.tasks_in_cluster()) == 200

        # Another replica (a fresh process) finds the definition instead of registering.
        replica = EcsProvider(fast_settings())
        await replica.submit(ecs_aws.spec("run-replica"))
        await replica.close()
        assert ecs_aws.server.calls("RegisterTaskDefinition") == 1

        # A changed image is new content: one new definition, then reused.
        changed = ecs_aws.config(image="ghcr.io/example/flows:2")
        await provider.submit(ecs_aws.spec("run-new-1", config=changed))
        await provider.submit(ecs_aws.spec("run-new-2", config=changed))
        assert ecs_aws.server.calls("RegisterTaskDefinition") == 2
        assert len(ecs_aws.task_definitions()) == 2
    finally:
        await provider.close()


async def test_retry_after_crash_before_recording_yields_one_task(ecs_aws: Aws) -> None:
    """The dispatcher died after RunTask answered; a new process submits the same attempt."""
    spec = ecs_aws.spec("run-crash")
    first = EcsProvider(fast_settings())
    lost = await first.submit(spec)  # answer never recorded
    await first.close()

    second = EcsProvider(fast_settings())
    try:
        again = await second.submit(spec)
    finally:
        await second.close()
    assert again.infra_id == lost.infra_id
    assert len(ecs_aws.tasks_in_cluster()) == 1
    assert [r["outcome"] for r in ecs_aws.server.run_tasks()] == ["created", "replayed"]


async def test_next_attempt_adopts_the_live_task_instead_of_starting_another(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    lost = await ecs_provider.submit(ecs_aws.spec("run-2", attempt=1))
    again = await ecs_provider.submit(ecs_aws.spec("run-2", attempt=2))
    assert again.infra_id == lost.infra_id
    assert len(ecs_aws.tasks_in_cluster()) == 1
    assert ecs_aws.server.calls("RunTask") == 1


async def test_next_attempt_after_a_stopped_task_starts_a_new_one(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    first = await ecs_provider.submit(ecs_aws.spec("run-3", attempt=1))
    ecs_aws.server.set_outcome(parse_infra_id(first.infra_id)[2], lastStatus="STOPPED",
                               stopCode="EssentialContainerExited", containers=[{"exitCode": 1}])
    second = await ecs_provider.submit(ecs_aws.spec("run-3", attempt=2))
    assert second.infra_id != first.infra_id
    assert len(ecs_aws.tasks_in_cluster()) == 2


async def test_lost_response_is_retried_with_the_same_token(ecs_aws: Aws,
                                                            ecs_provider: EcsProvider) -> None:
    ecs_aws.server.add_fault("RunTask", "lost", times=1)
    submission = await ecs_provider.submit(ecs_aws.spec("run-lost"))
    assert [r["outcome"] for r in ecs_aws.server.run_tasks()] == ["created", "replayed"]
    assert ecs_aws.tasks_in_cluster() == [parse_infra_id(submission.infra_id)[2]]


async def test_changed_parameters_under_the_same_token_find_the_first_task(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    first = await ecs_provider.submit(ecs_aws.spec("run-c", env={"TOKEN": "a"}))
    again = await ecs_provider.submit(ecs_aws.spec("run-c", env={"TOKEN": "b"}))
    assert again.infra_id == first.infra_id
    assert [r["outcome"] for r in ecs_aws.server.run_tasks()] == ["created", "conflict"]


async def test_changed_parameters_after_the_task_finished_adopt_the_stopped_task(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    first = await ecs_provider.submit(ecs_aws.spec("run-d", env={"TOKEN": "a"}))
    ecs_aws.server.set_outcome(parse_infra_id(first.infra_id)[2], lastStatus="STOPPED",
                               stopCode="EssentialContainerExited", containers=[{"exitCode": 0}])
    again = await ecs_provider.submit(ecs_aws.spec("run-d", env={"TOKEN": "b"}))
    assert again.infra_id == first.infra_id
    assert len(ecs_aws.tasks_in_cluster()) == 1


async def test_throttling_a_third_of_calls_submits_every_run_once_within_the_bucket(
        ecs_aws: Aws) -> None:
    rate, burst = 60.0, 5.0
    provider = EcsProvider(fast_settings(run_task_rate=rate, run_task_burst=burst,
                                         run_task_min_rate=rate / 2))
    ecs_aws.server.add_fault("RunTask", "throttle", every=3)
    try:
        specs = [ecs_aws.spec(f"run-t{i}") for i in range(45)]
        submissions = await asyncio.gather(
            *(submit_like_the_dispatcher(provider, s) for s in specs))
        bucket = provider.rate_limiter("us-east-1", ecs_aws.config())
    finally:
        await provider.close()

    records = ecs_aws.server.run_tasks()
    made = [r for r in records if r["outcome"] == "created"]
    assert sorted(r["started_by"] for r in made) == sorted(f"pushpool/run-t{i}"
                                                           for i in range(45))
    assert len({s.infra_id for s in submissions}) == 45
    assert len(ecs_aws.tasks_in_cluster()) == 45
    throttled = [r for r in records if r["outcome"] == "fault:throttle"]
    assert len(throttled) >= 15
    assert bucket.throttles == len(throttled) and bucket.lowest_rate == rate / 2

    # Every RunTask that reached AWS, throttled or not, fits the bucket's envelope. Arrival
    # times are read at the emulator, so requests the bucket spaced out can arrive bunched
    # when the host stalls a thread: allow JITTER seconds of that. Without the bucket, all
    # 45 arrive within a few 100 ms, far outside it.
    jitter = 0.3
    times = sorted(r["t"] for r in records)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            window = times[j] - start
            assert j - i + 1 <= burst + rate * (window + jitter) + 1, (i, j, window)
    assert times[-1] - times[0] >= 0.9 * (len(times) - burst) / rate


async def test_server_errors_are_retryable_and_throttling_is_marked(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    ecs_aws.server.add_fault("RunTask", "500")
    with pytest.raises(RetryableProviderError) as caught:
        await ecs_provider.submit(ecs_aws.spec("run-5xx"))
    assert not caught.value.throttled and "ServerException" in str(caught.value)
    assert ecs_aws.server.calls("RunTask") == ecs_provider.settings.submit_attempts

    ecs_aws.server.clear_faults()
    ecs_aws.server.add_fault("RunTask", "429")
    with pytest.raises(RetryableProviderError) as caught:
        await ecs_provider.submit(ecs_aws.spec("run-429"))
    assert caught.value.throttled

    ecs_aws.server.clear_faults()
    ecs_aws.server.add_fault("RunTask", "503", times=1)
    await ecs_provider.submit(ecs_aws.spec("run-503"))  # retried inside submit
    assert len(created(ecs_aws)) == 1


async def test_register_task_definition_throttling_is_retried(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    ecs_aws.server.add_fault("RegisterTaskDefinition", "throttle", times=2)
    ecs_aws.server.add_fault("RegisterTaskDefinition", "error", times=1, code="ClientException",
                             message="Too many concurrent attempts to create a new revision "
                                     "of the specified family.")
    await ecs_provider.submit(ecs_aws.spec("run-reg"))
    assert ecs_aws.server.calls("RegisterTaskDefinition") == 4
    assert len(ecs_aws.task_definitions()) == 1


async def test_a_register_answered_503_says_so_and_not_throttling(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    ecs_aws.server.add_fault("RegisterTaskDefinition", "503")
    with pytest.raises(RetryableProviderError) as caught:
        await ecs_provider.submit(ecs_aws.spec("run-reg-503"))
    message = str(caught.value)
    assert "throttl" not in message and not caught.value.throttled
    assert "failed 6 times in a row" in message and "Service unavailable" in message


async def test_unknown_subnet_is_permanent_with_aws_message(ecs_aws: Aws,
                                                            ecs_provider: EcsProvider) -> None:
    config = ecs_aws.config(subnets=["subnet-0123456789abcdef0"], security_groups=[])
    with pytest.raises(PermanentProviderError) as caught:
        await ecs_provider.submit(ecs_aws.spec(config=config))
    message = str(caught.value)
    assert "RunTask" in message and "InvalidSubnetID.NotFound" in message
    assert "The subnet ID 'subnet-0123456789abcdef0' does not exist" in message


async def test_missing_cluster_is_permanent(ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    with pytest.raises(PermanentProviderError, match="ClusterNotFoundException"):
        await ecs_provider.submit(ecs_aws.spec(config=ecs_aws.config(cluster="nope")))


async def test_access_denied_is_permanent_with_aws_message(ecs_aws: Aws,
                                                           ecs_provider: EcsProvider) -> None:
    ecs_aws.server.add_fault("RunTask", "error", code="AccessDeniedException", status=400,
                             message="User: arn:aws:iam::123456789012:user/ci is not "
                                     "authorized to perform: ecs:RunTask")
    with pytest.raises(PermanentProviderError, match="not authorized to perform: ecs:RunTask"):
        await ecs_provider.submit(ecs_aws.spec())
    assert ecs_aws.server.calls("RunTask") == 1


@pytest.mark.parametrize(("reason", "error"), [
    ("RESOURCE:MEMORY", RetryableProviderError),
    ("Capacity is unavailable at this time. Please try again later or in a different "
     "availability zone", RetryableProviderError),
    ("ATTRIBUTE", PermanentProviderError),
])
async def test_run_task_failures_are_errors(ecs_aws: Aws, ecs_provider: EcsProvider,
                                            reason: str, error: type[Exception]) -> None:
    ecs_aws.server.add_fault("RunTask", "failure", reason=reason, detail="injected")
    with pytest.raises(error, match=reason.split(" ")[0]):
        await ecs_provider.submit(ecs_aws.spec())


async def test_bad_configuration_is_permanent_before_any_call(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    with pytest.raises(PermanentProviderError, match="cpu=256 with memory=4096"):
        await ecs_provider.submit(ecs_aws.spec(config=ecs_aws.config(cpu=256, memory=4096)))
    with pytest.raises(PermanentProviderError, match="launch_type"):
        await ecs_provider.submit(ecs_aws.spec(config=ecs_aws.config(launch_type="EC2")))
    assert ecs_aws.server.calls("RunTask") == 0


async def test_a_run_without_an_image_is_refused(ecs_aws: Aws,
                                                 ecs_provider: EcsProvider) -> None:
    config = {k: v for k, v in ecs_aws.config().items() if k != "image"}
    with pytest.raises(PermanentProviderError, match=r"^image: no container image"):
        await ecs_provider.submit(ecs_aws.spec(config=config))
    await ecs_provider.submit(ecs_aws.spec(config=config, image="from/deployment:1"))
    [record] = created(ecs_aws)
    definition = ecs_aws.client("ecs").describe_task_definition(
        taskDefinition=record["task_definition"])["taskDefinition"]
    assert definition["containerDefinitions"][0]["image"] == "from/deployment:1"


async def test_oversized_overrides_are_refused(ecs_aws: Aws,
                                               ecs_provider: EcsProvider) -> None:
    with pytest.raises(PermanentProviderError, match="8192"):
        await ecs_provider.submit(ecs_aws.spec(env={"BIG": "x" * 9000}))
    assert ecs_aws.server.calls("RunTask") == 0


async def test_fargate_spot_runs_through_a_capacity_provider(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    await ecs_provider.submit(ecs_aws.spec(config=ecs_aws.config(launch_type="FARGATE_SPOT")))
    [record] = ecs_aws.server.run_tasks()
    assert "launchType" not in record["request"]
    assert record["request"]["capacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE_SPOT", "weight": 1}]


async def test_existing_task_definition_is_run_never_registered(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    arn = ecs_aws.client("ecs").register_task_definition(
        family="team-flow", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="512", memory="1024",
        containerDefinitions=[{"name": "app", "image": "team/flow:7"}])[
        "taskDefinition"]["taskDefinitionArn"]
    config = {k: v for k, v in ecs_aws.config(task_definition_arn=arn).items() if k != "image"}
    await ecs_provider.submit(ecs_aws.spec(config=config, cpu=1024, memory=2048))
    assert ecs_aws.server.calls("RegisterTaskDefinition") == 1  # only ours, above
    [record] = ecs_aws.server.run_tasks()
    overrides = record["request"]["overrides"]
    assert overrides["containerOverrides"][0]["name"] == "app"
    assert (overrides["cpu"], overrides["memory"]) == ("1024", "2048")
    with pytest.raises(PermanentProviderError, match="image: cannot be combined"):
        await ecs_provider.submit(ecs_aws.spec(config=config, image="other:1"))


async def test_raw_task_definition_and_run_request_fields_are_merged(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    config = ecs_aws.config(
        task_role_arn="arn:aws:iam::123456789012:role/flow",
        task_definition={"ephemeralStorage": {"sizeInGiB": 50}, "containerDefinitions": [
            {"name": "pushpool", "stopTimeout": 90},
            {"name": "sidecar", "image": "envoy:1", "essential": False}]},
        task_run_request={"enableExecuteCommand": True, "group": "nightly"},
        platform_version="1.4.0", tags={"team": "data"})
    await ecs_provider.submit(ecs_aws.spec(config=config))
    [record] = ecs_aws.server.run_tasks()
    request = record["request"]
    assert request["enableExecuteCommand"] is True and request["group"] == "nightly"
    assert request["platformVersion"] == "1.4.0"
    assert request["overrides"]["taskRoleArn"] == "arn:aws:iam::123456789012:role/flow"
    assert {"key": "team", "value": "data"} in request["tags"]
    answer = ecs_aws.client("ecs").describe_task_definition(
        taskDefinition=request["taskDefinition"], include=["TAGS"])
    definition = answer["taskDefinition"]
    names = [c["name"] for c in definition["containerDefinitions"]]
    assert names == ["pushpool", "sidecar"]
    assert definition["containerDefinitions"][0]["stopTimeout"] == 90
    assert definition["containerDefinitions"][0]["image"] == "ghcr.io/example/flows:1"
    tags = {t["key"]: t["value"] for t in answer["tags"]}
    assert tags["team"] == "data" and tags["pushpool:pool"] == "ecs-pool"
    assert len(tags["pushpool:content-hash"]) == 64
    assert definition["family"].endswith(tags["pushpool:content-hash"][:16])


async def test_deregistered_definition_is_registered_again(ecs_aws: Aws,
                                                           ecs_provider: EcsProvider) -> None:
    first = await ecs_provider.submit(ecs_aws.spec("run-a"))
    definition = ecs_aws.server.run_tasks()[0]["task_definition"]
    ecs_aws.client("ecs").deregister_task_definition(taskDefinition=definition)  # a replica
    second = await ecs_provider.submit(ecs_aws.spec("run-b"))
    assert second.infra_id != first.infra_id
    outcomes = [r["outcome"] for r in ecs_aws.server.run_tasks()]
    assert outcomes == ["created", "inactive", "created"]
    assert ecs_aws.server.calls("RegisterTaskDefinition") == 2


async def test_assumed_role_credentials(ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    config = ecs_aws.config(credentials={
        "role_arn": "arn:aws:iam::123456789012:role/pushpool-dispatch",
        "external_id": "pool-7"})
    await ecs_provider.submit(ecs_aws.spec(config=config))
    assert ecs_aws.server.calls("AssumeRole") == 1
    assert len(created(ecs_aws)) == 1


async def test_submits_share_one_client_per_connection(ecs_aws: Aws,
                                                       ecs_provider: EcsProvider) -> None:
    await asyncio.gather(*(ecs_provider.submit(ecs_aws.spec()) for _ in range(5)))
    conn = next(iter(ecs_provider._buckets))
    assert ecs_provider.aws.client(conn, "ecs") is ecs_provider.aws.client(conn, "ecs")
    assert ecs_aws.server.calls("DescribeVpcs") == 1  # network defaults cached


async def test_unreachable_endpoint_is_retryable(ecs_aws: Aws,
                                                 ecs_provider: EcsProvider) -> None:
    config = ecs_aws.config(endpoint_url="http://127.0.0.1:9", subnets=["subnet-1a2b3c4d"])
    with pytest.raises(RetryableProviderError, match="could not reach AWS"):
        await ecs_provider.submit(ecs_aws.spec(config=config))
