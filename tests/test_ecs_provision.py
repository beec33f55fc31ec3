"""--provision-infra for ecs:push against moto: plan, apply, rerun, partial failure, removal.

EC2, IAM and ECR state outlives a test (resetting them costs seconds), so each test
uses pool names of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from providers.base import InfraPhase, ProvisionStep
from providers.ecs import EcsProvider
from providers.ecs.config import validate_config
from providers.ecs.provision import ProvisionError
from tests.fakes.ecs_testing import Aws

pytest_plugins = ["tests.ecs_fixtures"]

MANAGED = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"


def options(aws: Aws, **extra: Any) -> dict[str, Any]:
    return {"region": aws.region, "endpoint_url": aws.server.url, **extra}


def actions(steps: list[ProvisionStep]) -> dict[str, str]:
    return {f"{s.resource}:{s.name}": s.action for s in steps}


def pool_tag(tags: list[dict[str, str]], key: str = "Key", value: str = "Value") -> str | None:
    return next((t[value] for t in tags if t[key] == "pushpool:pool"), None)


async def test_plan_then_apply_then_rerun_makes_nothing(ecs_aws: Aws,
                                                        ecs_provider: EcsProvider) -> None:
    pool = "prov-one"
    plan = await ecs_provider.provision(pool, options(ecs_aws), apply=False)
    assert plan.target == "account 123456789012, region us-east-1"
    assert actions(plan.steps) == {
        "ecs cluster:pushpool-prov-one": "create",
        "iam role:pushpool-prov-one-execution": "create",
        "iam role policy:pushpool-prov-one-execution/execution": "create",
        "log group:/pushpool/prov-one": "create",
        "ecr repository:pushpool/prov-one": "create",
        f"vpc:{plan.template_defaults['vpc_id']}": "exists",
        "security group:pushpool-prov-one": "create",
    }
    ecs = ecs_aws.client("ecs")
    assert ecs.describe_clusters(clusters=["pushpool-prov-one"])["clusters"] == []

    seen: list[ProvisionStep] = []
    applied = await ecs_provider.provision(pool, options(ecs_aws), apply=True,
                                           on_step=seen.append)
    assert seen == applied.steps and applied.changes == 6
    [cluster] = ecs.describe_clusters(clusters=["pushpool-prov-one"], include=["TAGS"])[
        "clusters"]
    assert cluster["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert pool_tag(cluster["tags"], "key", "value") == pool
    iam = ecs_aws.client("iam")
    role = iam.get_role(RoleName="pushpool-prov-one-execution")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName="pushpool-prov-one-execution")
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [MANAGED]
    logs = ecs_aws.client("logs")
    [group] = logs.describe_log_groups(logGroupNamePrefix="/pushpool/prov-one")["logGroups"]
    assert group["retentionInDays"] == 30
    repo = ecs_aws.client("ecr").describe_repositories(repositoryNames=["pushpool/prov-one"])
    assert repo["repositories"][0]["repositoryUri"].endswith("/pushpool/prov-one")

    defaults = applied.template_defaults
    assert defaults["cluster"] == "pushpool-prov-one"
    assert defaults["execution_role_arn"] == role["Arn"]
    assert defaults["region"] == "us-east-1" and defaults["endpoint_url"] == ecs_aws.server.url
    assert len(defaults["subnets"]) == 6 and defaults["security_groups"][0].startswith("sg-")
    assert defaults["cloudwatch_logs"]["group"] == "/pushpool/prov-one"
    assert defaults["cloudwatch_logs"]["create_group"] is False

    # The defaults make a working pool: a run goes out on the provisioned cluster.
    config = {**defaults, "image": "ghcr.io/example/flows:1"}
    validate_config(config)
    submission = await ecs_provider.submit(ecs_aws.spec(config=config))
    assert "::pushpool-prov-one::" in submission.infra_id
    assert (await ecs_provider.status(submission)).phase is InfraPhase.RUNNING

    rerun = await ecs_provider.provision(pool, options(ecs_aws), apply=True)
    assert rerun.changes == 0 and {s.action for s in rerun.steps} == {"exists"}
    assert rerun.template_defaults == defaults


async def test_deprovision_removes_only_what_pushpool_tagged(ecs_aws: Aws,
                                                             ecs_provider: EcsProvider) -> None:
    pool, other = "prov-two", "prov-bystander"
    logs = ecs_aws.client("logs")
    logs.create_log_group(logGroupName="/pushpool/prov-two")  # the user's own, untagged
    await ecs_provider.provision(other, options(ecs_aws), apply=True)
    plan = await ecs_provider.provision(pool, options(ecs_aws), apply=True)
    assert actions(plan.steps)["log group:/pushpool/prov-two"] == "exists"
    provisioned = {**dataclasses.asdict(plan), "options": options(ecs_aws)}

    preview = await ecs_provider.deprovision(pool, provisioned, apply=False)
    assert actions(preview.steps) == {
        "ecs cluster:pushpool-prov-two": "delete",
        "iam role:pushpool-prov-two-execution": "delete",
        "log group:/pushpool/prov-two": "keep",
        "ecr repository:pushpool/prov-two": "delete",
        f"security group:{plan.template_defaults['security_groups'][0]}": "delete",
    }
    await ecs_provider.deprovision(pool, provisioned, apply=True)

    ecs, iam, ecr = (ecs_aws.client(s) for s in ("ecs", "iam", "ecr"))
    assert [c["status"] for c in ecs.describe_clusters(clusters=["pushpool-prov-two"])[
        "clusters"]] in ([], ["INACTIVE"])
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName="pushpool-prov-two-execution")
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.describe_repositories(repositoryNames=["pushpool/prov-two"])
    assert logs.describe_log_groups(logGroupNamePrefix="/pushpool/prov-two")["logGroups"]
    # The default VPC and the other pool are untouched.
    ec2 = ecs_aws.client("ec2")
    assert ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    again = await ecs_provider.provision(other, options(ecs_aws), apply=False)
    assert again.changes == 0

    after = await ecs_provider.deprovision(pool, provisioned, apply=True)
    assert {s.action for s in after.steps} <= {"absent", "keep"}


async def test_partial_failure_says_what_was_made_and_rerun_finishes(
        ecs_aws: Aws, ecs_provider: EcsProvider) -> None:
    pool = "prov-three"
    ecs_aws.server.add_fault("CreateRepository", "error", code="AccessDeniedException",
                             message="not authorized to perform: ecr:CreateRepository",
                             times=1)
    with pytest.raises(ProvisionError) as caught:
        await ecs_provider.provision(pool, options(ecs_aws), apply=True)
    message = str(caught.value)
    assert "stopped at ecr repository pushpool/prov-three" in message
    assert "not authorized to perform: ecr:CreateRepository" in message
    assert ("Made: ecs cluster pushpool-prov-three, iam role pushpool-prov-three-execution, "
            "iam role policy pushpool-prov-three-execution/execution, "
            "log group /pushpool/prov-three.") in message
    assert "Not made: ecr repository pushpool/prov-three, security group pushpool-prov-three" \
        in message

    rerun = await ecs_provider.provision(pool, options(ecs_aws), apply=True)
    assert {k: v for k, v in actions(rerun.steps).items() if v == "create"} == {
        "ecr repository:pushpool/prov-three": "create",
        "security group:pushpool-prov-three": "create"}


async def test_inline_policy_when_the_managed_one_is_missing(ecs_aws: Aws,
                                                             ecs_provider: EcsProvider) -> None:
    ecs_aws.server.add_fault("GetPolicy", "error", code="NoSuchEntity", status=404,
                             message="Policy does not exist", service="iam")
    plan = await ecs_provider.provision("prov-four", options(ecs_aws), apply=True)
    step = next(s for s in plan.steps if s.resource == "iam role policy")
    assert "inline" in step.detail
    iam = ecs_aws.client("iam")
    assert iam.list_role_policies(RoleName="pushpool-prov-four-execution")["PolicyNames"] == [
        "pushpool-task-execution"]
    rerun = await ecs_provider.provision("prov-four", options(ecs_aws), apply=False)
    assert rerun.changes == 0


async def test_region_without_default_vpc_gets_a_tagged_vpc(ecs_aws: Aws,
                                                            ecs_provider: EcsProvider) -> None:
    region = "eu-west-3"
    ec2 = ecs_aws.client("ec2", region)
    for vpc in ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]:
        for subnet in ec2.describe_subnets(Filters=[
                {"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        ec2.delete_vpc(VpcId=vpc["VpcId"])
    opts = {**options(ecs_aws), "region": region}

    ecs_aws.server.add_fault("CreateRouteTable", "error", code="UnauthorizedOperation",
                             status=403, message="not authorized", service="ec2", times=1)
    with pytest.raises(ProvisionError, match="Not made: route table pushpool-prov-five"):
        await ecs_provider.provision("prov-five", opts, apply=True)
    plan = await ecs_provider.provision("prov-five", opts, apply=True)  # finishes the job
    assert [(s.resource, s.action) for s in plan.steps if s.resource in (
        "vpc", "internet gateway", "subnet", "route table", "security group")] == [
        ("vpc", "exists"), ("internet gateway", "exists"), ("subnet", "exists"),
        ("subnet", "exists"), ("subnet", "exists"), ("route table", "create"),
        ("security group", "create")]
    vpc_id = plan.template_defaults["vpc_id"]
    [vpc] = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    assert pool_tag(vpc["Tags"]) == "prov-five"
    subnets = ec2.describe_subnets(SubnetIds=plan.template_defaults["subnets"])["Subnets"]
    assert {s["VpcId"] for s in subnets} == {vpc_id} and len(subnets) == 3
    assert all(s["MapPublicIpOnLaunch"] for s in subnets)
    [table] = ec2.describe_route_tables(Filters=[
        {"Name": "tag:pushpool:pool", "Values": ["prov-five"]}])["RouteTables"]
    assert any(r.get("GatewayId", "").startswith("igw-") for r in table["Routes"])
    assert sorted(a["SubnetId"] for a in table["Associations"]) == sorted(
        plan.template_defaults["subnets"])

    rerun = await ecs_provider.provision("prov-five", opts, apply=False)
    assert rerun.changes == 0 and rerun.template_defaults["vpc_id"] == vpc_id

    removed = await ecs_provider.deprovision("prov-five", dataclasses.asdict(plan), apply=True)
    assert {s.resource for s in removed.steps if s.action == "delete"} >= {
        "vpc", "subnet", "internet gateway", "route table", "security group"}
    assert ec2.describe_vpcs(Filters=[
        {"Name": "tag:pushpool:pool", "Values": ["prov-five"]}])["Vpcs"] == []
