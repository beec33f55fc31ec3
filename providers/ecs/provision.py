"""``--provision-infra`` for ecs:push: plan, then idempotently make, an ECS pool's AWS side.

What a pool needs: an ECS cluster with the FARGATE and FARGATE_SPOT capacity providers,
a task execution role (trusting ecs-tasks, with AWS's AmazonECSTaskExecutionRolePolicy
or an equivalent inline policy), a CloudWatch log group with retention, an ECR
repository for flow images, a security group, and, only when the region has no default
VPC, a VPC with an internet gateway, public subnets and a route table.

Everything made carries the tag ``pushpool:pool=<pool>``. Planning reads only; each step
is "create" or "exists", so a rerun makes nothing, and a run stopped by a failure is
finished by the next. ``deprovision`` removes what carries the pool's tag.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.base import (
    PermanentProviderError,
    ProviderError,
    ProvisionPlan,
    ProvisionStep,
    RetryableProviderError,
)
from providers.ecs.aws import AwsClients, Connection, code_of
from providers.provision_options import ProvisionOption

POOL_TAG = "pushpool:pool"
MANAGED_TAG = "pushpool:managed-by"
EXECUTION_POLICY = "service-role/AmazonECSTaskExecutionRolePolicy"
STREAM_PREFIX = "pushpool"
DEFAULT_RETENTION_DAYS = 30
DEFAULT_VPC_CIDR = "10.192.0.0/16"
SUBNET_COUNT = 3

ECS_TASKS_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}
# The same permissions as AmazonECSTaskExecutionRolePolicy, for accounts (and emulators)
# where the managed policy cannot be found.
INLINE_EXECUTION_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
        "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage",
        "logs:CreateLogStream", "logs:PutLogEvents"]}],
}
INLINE_POLICY_NAME = "pushpool-task-execution"

Apply = Callable[[], Awaitable[str | None]]


class ProvisionError(PermanentProviderError):
    """Provisioning (or deprovisioning) stopped part way; the message lists what was done."""

    def __init__(self, message: str, *, done: list[ProvisionStep],
                 not_done: list[ProvisionStep], retryable: bool = False):
        super().__init__(message)
        self.done = done
        self.not_done = not_done
        self.retryable = retryable


@dataclass(frozen=True)
class Names:
    cluster: str
    role: str
    log_group: str
    repository: str
    security_group: str
    vpc: str


PROVISION_OPTIONS = (
    ProvisionOption("region", "AWS region (default: your SDK's)"),
    ProvisionOption("endpoint_url", "AWS API endpoint (VPC endpoints, emulators)"),
    ProvisionOption("profile", "AWS credentials profile"),
    ProvisionOption("role_arn", "IAM role to assume for provisioning"),
    ProvisionOption("cluster", "ECS cluster name (default: pushpool-<pool>)"),
    ProvisionOption("execution_role_name", "task execution role name"),
    ProvisionOption("log_group", "CloudWatch log group (default: /pushpool/<pool>)"),
    ProvisionOption("log_retention_days", "days CloudWatch keeps the logs", "int"),
    ProvisionOption("ecr_repository", "ECR repository name"),
    ProvisionOption("security_group_name", "security group name"),
    ProvisionOption("vpc_id", "use this VPC (default: the default VPC, else a new one)"),
    ProvisionOption("vpc_cidr", "CIDR of a VPC pushpool makes"),
)


def names_for(pool_name: str, options: Mapping[str, Any]) -> Names:
    """Resource names for a pool; each can be overridden through ``options``."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", pool_name).strip("-") or "pool"
    return Names(
        cluster=str(options.get("cluster") or f"pushpool-{base}"),
        role=str(options.get("execution_role_name") or f"pushpool-{base}-execution")[:64],
        log_group=str(options.get("log_group") or f"/pushpool/{base}"),
        repository=str(options.get("ecr_repository") or f"pushpool/{base.lower()}"),
        security_group=str(options.get("security_group_name") or f"pushpool-{base}"),
        vpc=f"pushpool-{base}",
    )


def connection_from(options: Mapping[str, Any]) -> Connection:
    creds = options.get("credentials") if isinstance(options.get("credentials"), Mapping) else {}
    assert isinstance(creds, Mapping)
    return Connection(region=options.get("region"), endpoint_url=options.get("endpoint_url"),
                      profile=options.get("profile") or creds.get("profile"),
                      role_arn=options.get("role_arn") or creds.get("role_arn"),
                      external_id=creds.get("external_id"))


def _tags(pool_name: str) -> dict[str, str]:
    return {POOL_TAG: pool_name, MANAGED_TAG: "pushpool"}


def _ec2_tags(resource: str, pool_name: str, name: str) -> list[dict[str, Any]]:
    tags = [{"Key": k, "Value": v} for k, v in {**_tags(pool_name), "Name": name}.items()]
    return [{"ResourceType": resource, "Tags": tags}]


def has_pool_tag(tags: Any, pool_name: str) -> bool:
    """True if a tag list ({Key,Value} or {key,value}) or dict has pushpool:pool=<pool>."""
    if isinstance(tags, Mapping):
        return tags.get(POOL_TAG) == pool_name
    for tag in tags or []:
        key = tag.get("Key", tag.get("key"))
        if key == POOL_TAG and tag.get("Value", tag.get("value")) == pool_name:
            return True
    return False


@dataclass
class Context:
    aws: AwsClients
    conn: Connection
    pool_name: str
    names: Names
    options: Mapping[str, Any]
    account: str
    partition: str
    defaults: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    async def call(self, service: str, method: str, **kwargs: Any) -> Any:
        return await self.aws.call(self.conn, service, method, **kwargs)


@dataclass
class Planned:
    step: ProvisionStep
    apply: Apply | None = None  # None: nothing to do


async def identity(aws: AwsClients, options: Mapping[str, Any]) -> tuple[Connection, str, str]:
    conn = await aws.resolve(connection_from(options))
    who = await aws.call(conn, "sts", "get_caller_identity")
    partition = str(who.get("Arn", "arn:aws:")).split(":")[1] or "aws"
    return conn, str(who["Account"]), partition


# ---------------------------------------------------------------------------- provision


async def provision(aws: AwsClients, pool_name: str, options: Mapping[str, Any], apply: bool,
                    *, on_step: Callable[[ProvisionStep], None] | None = None
                    ) -> ProvisionPlan:
    """Plan (``apply=False``) or make (``apply=True``) an ECS pool's resources.

    ``options``: region, endpoint_url, profile (or credentials {...}), and optional
    names: cluster, execution_role_name, log_group, ecr_repository, security_group_name,
    vpc_id (use this VPC), vpc_cidr, log_retention_days. ``on_step`` is called with each
    step once it is planned (apply=False) or done (apply=True).
    """
    conn, account, partition = await identity(aws, options)
    ctx = Context(aws, conn, pool_name, names_for(pool_name, options), options, account,
                   partition)
    ctx.defaults["region"] = conn.region
    if conn.endpoint_url:
        ctx.defaults["endpoint_url"] = conn.endpoint_url
    if conn.profile or conn.role_arn:
        ctx.defaults["credentials"] = {k: v for k, v in {
            "profile": conn.profile, "role_arn": conn.role_arn,
            "external_id": conn.external_id}.items() if v}
    planned: list[Planned] = []
    for planner in (_plan_cluster, _plan_role, _plan_log_group, _plan_repository,
                    _plan_network):
        planned.extend(await planner(ctx))
    target = f"account {account}, region {conn.region}"
    steps: list[ProvisionStep] = []
    for index, item in enumerate(planned):
        step = item.step
        if apply and item.apply is not None:
            try:
                made = await item.apply()
            except ProviderError as exc:
                raise stopped("provisioning", pool_name, step, exc, steps,
                               [p.step for p in planned[index + 1:] if p.apply]) from exc
            if made:
                step = dataclasses.replace(step, detail=f"{step.detail} ({made})".strip())
        steps.append(step)
        if on_step is not None:
            on_step(step)
    return ProvisionPlan(target=target, steps=steps, template_defaults=dict(ctx.defaults))


def stopped(what: str, pool_name: str, step: ProvisionStep, exc: ProviderError,
             done: list[ProvisionStep], rest: list[ProvisionStep]) -> ProvisionError:
    verb = "made" if what == "provisioning" else "removed"
    changed = [s for s in done if s.action in ("create", "delete")]
    made = ", ".join(f"{s.resource} {s.name}" for s in changed) or "nothing"
    todo = ", ".join(f"{s.resource} {s.name}" for s in [step, *rest])
    message = (f"{what} pool {pool_name!r} stopped at {step.resource} {step.name}: {exc}. "
               f"{verb.capitalize()}: {made}. Not {verb}: {todo}. Fix the cause and rerun; "
               f"what is already there is kept.")
    return ProvisionError(message, done=changed, not_done=[step, *rest],
                          retryable=isinstance(exc, RetryableProviderError))


async def _plan_cluster(ctx: Context) -> list[Planned]:
    name = ctx.names.cluster
    ctx.defaults["cluster"] = name
    answer = await ctx.call("ecs", "describe_clusters", clusters=[name])
    if any(c.get("status") == "ACTIVE" for c in answer.get("clusters") or []):
        return [Planned(ProvisionStep("ecs cluster", name, "exists"))]

    async def create() -> str | None:
        made = await ctx.call(
            "ecs", "create_cluster", clusterName=name,
            capacityProviders=["FARGATE", "FARGATE_SPOT"],
            defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}],
            tags=[{"key": k, "value": v} for k, v in _tags(ctx.pool_name).items()])
        return str(made["cluster"]["clusterArn"])

    return [Planned(ProvisionStep("ecs cluster", name, "create",
                                   "FARGATE and FARGATE_SPOT capacity providers"), create)]


async def _plan_role(ctx: Context) -> list[Planned]:
    name = ctx.names.role
    arn = f"arn:{ctx.partition}:iam::{ctx.account}:role/{name}"
    ctx.defaults["execution_role_arn"] = arn
    planned: list[Planned] = []
    exists = await iam_role_exists(ctx, name)
    if exists:
        planned.append(Planned(ProvisionStep("iam role", name, "exists")))
    else:
        async def create_role() -> str | None:
            made = await ctx.call(
                "iam", "create_role", RoleName=name,
                AssumeRolePolicyDocument=json.dumps(ECS_TASKS_TRUST),
                Description=f"pushpool task execution role for pool {ctx.pool_name}",
                Tags=[{"Key": k, "Value": v} for k, v in _tags(ctx.pool_name).items()])
            return str(made["Role"]["Arn"])

        planned.append(Planned(ProvisionStep(
            "iam role", name, "create", "task execution role trusted by ecs-tasks.amazonaws.com"),
            create_role))

    managed = f"arn:{ctx.partition}:iam::aws:policy/{EXECUTION_POLICY}"
    if exists and await _role_has_policy(ctx, name, managed):
        planned.append(Planned(ProvisionStep("iam role policy", f"{name}/execution",
                                              "exists")))
        return planned
    try:
        await ctx.call("iam", "get_policy", PolicyArn=managed)
        has_managed = True
    except PermanentProviderError as exc:
        if code_of(exc) != "NoSuchEntity":
            raise
        has_managed = False

    async def attach() -> str | None:
        if has_managed:
            await ctx.call("iam", "attach_role_policy", RoleName=name, PolicyArn=managed)
            return "AmazonECSTaskExecutionRolePolicy"
        await ctx.call("iam", "put_role_policy", RoleName=name, PolicyName=INLINE_POLICY_NAME,
                       PolicyDocument=json.dumps(INLINE_EXECUTION_POLICY))
        return f"inline {INLINE_POLICY_NAME}"

    detail = ("attach AmazonECSTaskExecutionRolePolicy" if has_managed
              else "inline policy: pull images, write logs")
    planned.append(Planned(ProvisionStep("iam role policy", f"{name}/execution", "create",
                                          detail), attach))
    return planned


async def iam_role_exists(ctx: Context, name: str) -> bool:
    try:
        await ctx.call("iam", "get_role", RoleName=name)
        return True
    except PermanentProviderError as exc:
        if code_of(exc) == "NoSuchEntity":
            return False
        raise


async def _role_has_policy(ctx: Context, name: str, managed: str) -> bool:
    attached = await ctx.call("iam", "list_attached_role_policies", RoleName=name)
    if any(p.get("PolicyArn") == managed for p in attached.get("AttachedPolicies") or []):
        return True
    inline = await ctx.call("iam", "list_role_policies", RoleName=name)
    return INLINE_POLICY_NAME in (inline.get("PolicyNames") or [])


async def _plan_log_group(ctx: Context) -> list[Planned]:
    name = ctx.names.log_group
    days = int(ctx.options.get("log_retention_days") or DEFAULT_RETENTION_DAYS)
    ctx.defaults["cloudwatch_logs"] = {"enabled": True, "group": name,
                                       "stream_prefix": STREAM_PREFIX, "create_group": False}
    if await find_log_group(ctx, name) is not None:
        return [Planned(ProvisionStep("log group", name, "exists"))]

    async def create() -> str | None:
        await ctx.call("logs", "create_log_group", logGroupName=name,
                       tags=_tags(ctx.pool_name))
        await ctx.call("logs", "put_retention_policy", logGroupName=name,
                       retentionInDays=days)
        return None

    return [Planned(ProvisionStep("log group", name, "create", f"retention {days} days"),
                     create)]


async def find_log_group(ctx: Context, name: str) -> Mapping[str, Any] | None:
    answer = await ctx.call("logs", "describe_log_groups", logGroupNamePrefix=name)
    return next((g for g in answer.get("logGroups") or [] if g.get("logGroupName") == name),
                None)


async def _plan_repository(ctx: Context) -> list[Planned]:
    name = ctx.names.repository
    uri = f"{ctx.account}.dkr.ecr.{ctx.conn.region}.amazonaws.com/{name}"
    if await find_repository(ctx, name) is not None:
        return [Planned(ProvisionStep("ecr repository", name, "exists", uri))]

    async def create() -> str | None:
        made = await ctx.call("ecr", "create_repository", repositoryName=name,
                              tags=[{"Key": k, "Value": v}
                                    for k, v in _tags(ctx.pool_name).items()])
        return str(made["repository"]["repositoryUri"])

    return [Planned(ProvisionStep("ecr repository", name, "create",
                                   f"for flow images: {uri}"), create)]


async def find_repository(ctx: Context, name: str) -> Mapping[str, Any] | None:
    try:
        answer = await ctx.call("ecr", "describe_repositories", repositoryNames=[name])
    except PermanentProviderError as exc:
        if code_of(exc) == "RepositoryNotFoundException":
            return None
        raise
    repos = answer.get("repositories") or []
    return repos[0] if repos else None


async def _plan_network(ctx: Context) -> list[Planned]:
    ctx.defaults["assign_public_ip"] = True
    vpc = await _find_vpc(ctx)
    planned: list[Planned] = []
    if vpc is not None and not has_pool_tag(vpc.get("Tags"), ctx.pool_name):
        how = "default VPC" if vpc.get("IsDefault") else "given in options"
        planned.append(Planned(ProvisionStep("vpc", vpc["VpcId"], "exists", how)))
        ctx.state["vpc_id"] = ctx.defaults["vpc_id"] = vpc["VpcId"]
        ctx.defaults["subnets"] = await _vpc_subnets(ctx, vpc)
    else:
        planned.extend(await _plan_own_vpc(ctx, vpc))
    planned.append(await _plan_security_group(ctx))
    return planned


async def _find_vpc(ctx: Context) -> Mapping[str, Any] | None:
    """The VPC to use: options.vpc_id, else the default VPC, else one pushpool made."""
    if ctx.options.get("vpc_id"):
        answer = await ctx.call("ec2", "describe_vpcs", VpcIds=[ctx.options["vpc_id"]])
        return (answer.get("Vpcs") or [None])[0]
    for filters in ([{"Name": "isDefault", "Values": ["true"]}],
                    [{"Name": f"tag:{POOL_TAG}", "Values": [ctx.pool_name]}]):
        answer = await ctx.call("ec2", "describe_vpcs", Filters=filters)
        if answer.get("Vpcs"):
            return answer["Vpcs"][0]
    return None


async def _vpc_subnets(ctx: Context, vpc: Mapping[str, Any]) -> list[str]:
    filters = [{"Name": "vpc-id", "Values": [vpc["VpcId"]]}]
    if vpc.get("IsDefault"):
        filters.append({"Name": "default-for-az", "Values": ["true"]})
    answer = await ctx.call("ec2", "describe_subnets", Filters=filters)
    return sorted(s["SubnetId"] for s in answer.get("Subnets") or [])[:16]


async def _plan_own_vpc(ctx: Context, vpc: Mapping[str, Any] | None) -> list[Planned]:
    """No default VPC: a VPC, an internet gateway, public subnets and a route table.

    ``vpc`` is one an earlier (perhaps interrupted) run made: its parts are checked one
    by one, so a rerun finishes what a failure left undone.
    """
    name = ctx.names.vpc
    state = ctx.state
    state["subnets"] = []
    gateway: str | None = None
    subnets: list[Mapping[str, Any]] = []
    table: Mapping[str, Any] | None = None
    planned: list[Planned] = []
    if vpc is None:
        cidr = ipaddress.ip_network(str(ctx.options.get("vpc_cidr") or DEFAULT_VPC_CIDR))

        async def create_vpc() -> str | None:
            made = await ctx.call("ec2", "create_vpc", CidrBlock=str(cidr),
                                  TagSpecifications=_ec2_tags("vpc", ctx.pool_name, name))
            state["vpc_id"] = ctx.defaults["vpc_id"] = made["Vpc"]["VpcId"]
            await ctx.call("ec2", "modify_vpc_attribute", VpcId=state["vpc_id"],
                           EnableDnsHostnames={"Value": True})
            return str(state["vpc_id"])

        planned.append(Planned(ProvisionStep(
            "vpc", name, "create", f"{cidr} (the region has no default VPC)"), create_vpc))
    else:
        vpc_id = vpc["VpcId"]
        cidr = ipaddress.ip_network(vpc["CidrBlock"])
        state["vpc_id"] = ctx.defaults["vpc_id"] = vpc_id
        planned.append(Planned(ProvisionStep("vpc", vpc_id, "exists", "made by pushpool")))
        in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
        gateways = await ctx.call("ec2", "describe_internet_gateways", Filters=[
            {"Name": "attachment.vpc-id", "Values": [vpc_id]}])
        gateway = next((g["InternetGatewayId"] for g in gateways.get("InternetGateways") or []),
                       None)
        subnets = (await ctx.call("ec2", "describe_subnets", Filters=in_vpc)).get(
            "Subnets") or []
        tables = await ctx.call("ec2", "describe_route_tables", Filters=[
            *in_vpc, {"Name": f"tag:{POOL_TAG}", "Values": [ctx.pool_name]}])
        table = next(iter(tables.get("RouteTables") or []), None)

    if gateway:
        state["igw_id"] = gateway
        planned.append(Planned(ProvisionStep("internet gateway", gateway, "exists")))
    else:
        async def create_gateway() -> str | None:
            made = await ctx.call("ec2", "create_internet_gateway", TagSpecifications=_ec2_tags(
                "internet-gateway", ctx.pool_name, name))
            state["igw_id"] = made["InternetGateway"]["InternetGatewayId"]
            await ctx.call("ec2", "attach_internet_gateway",
                           InternetGatewayId=state["igw_id"], VpcId=state["vpc_id"])
            return str(state["igw_id"])

        planned.append(Planned(ProvisionStep("internet gateway", name, "create"),
                                create_gateway))

    if table is not None:
        state["route_table"] = table["RouteTableId"]
    zones_answer = await ctx.call("ec2", "describe_availability_zones", Filters=[
        {"Name": "state", "Values": ["available"]}])
    zones = sorted(z["ZoneName"] for z in zones_answer.get("AvailabilityZones") or [])
    by_zone = {s["AvailabilityZone"]: s for s in subnets}
    used = {ipaddress.ip_network(s["CidrBlock"]) for s in subnets}
    free = (b for b in cidr.subnets(new_prefix=min(cidr.prefixlen + 4, 28))
            if not any(b.overlaps(u) for u in used))
    for zone in zones[:SUBNET_COUNT]:
        if zone in by_zone:
            subnet_id = by_zone[zone]["SubnetId"]
            state["subnets"].append(subnet_id)
            planned.append(Planned(ProvisionStep("subnet", subnet_id, "exists", zone)))
            continue
        block = str(next(free))
        planned.append(Planned(ProvisionStep("subnet", f"{name}-{zone}", "create",
                                              f"{block}, public"),
                                _subnet_maker(ctx, zone, block, f"{name}-{zone}")))
    ctx.defaults["subnets"] = list(state["subnets"])

    if table is not None:
        planned.append(Planned(ProvisionStep("route table", table["RouteTableId"], "exists")))
    else:
        async def create_routes() -> str | None:
            made = await ctx.call("ec2", "create_route_table", VpcId=state["vpc_id"],
                                  TagSpecifications=_ec2_tags("route-table", ctx.pool_name,
                                                              name))
            state["route_table"] = made["RouteTable"]["RouteTableId"]
            await ctx.call("ec2", "create_route", RouteTableId=state["route_table"],
                           DestinationCidrBlock="0.0.0.0/0", GatewayId=state["igw_id"])
            for subnet_id in state["subnets"]:
                await ctx.call("ec2", "associate_route_table",
                               RouteTableId=state["route_table"], SubnetId=subnet_id)
            return str(state["route_table"])

        planned.append(Planned(ProvisionStep("route table", name, "create",
                                              "0.0.0.0/0 via the internet gateway"),
                                create_routes))
    return planned


def _subnet_maker(ctx: Context, zone: str, block: str, name: str) -> Apply:
    async def create() -> str | None:
        state = ctx.state
        made = await ctx.call("ec2", "create_subnet", VpcId=state["vpc_id"], CidrBlock=block,
                              AvailabilityZone=zone,
                              TagSpecifications=_ec2_tags("subnet", ctx.pool_name, name))
        subnet_id = made["Subnet"]["SubnetId"]
        await ctx.call("ec2", "modify_subnet_attribute", SubnetId=subnet_id,
                       MapPublicIpOnLaunch={"Value": True})
        if state.get("route_table"):  # the table exists already (a resumed run)
            await ctx.call("ec2", "associate_route_table", RouteTableId=state["route_table"],
                           SubnetId=subnet_id)
        state["subnets"].append(subnet_id)
        ctx.defaults["subnets"] = list(state["subnets"])
        return str(subnet_id)
    return create


async def _plan_security_group(ctx: Context) -> Planned:
    name = ctx.names.security_group
    vpc_id = ctx.state.get("vpc_id")
    if vpc_id:
        answer = await ctx.call("ec2", "describe_security_groups", Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}])
        groups = answer.get("SecurityGroups") or []
        if groups:
            ctx.defaults["security_groups"] = [groups[0]["GroupId"]]
            return Planned(ProvisionStep("security group", name, "exists",
                                          groups[0]["GroupId"]))

    async def create() -> str | None:
        made = await ctx.call(
            "ec2", "create_security_group", GroupName=name, VpcId=ctx.state["vpc_id"],
            Description=f"pushpool pool {ctx.pool_name}: outbound only",
            TagSpecifications=_ec2_tags("security-group", ctx.pool_name, name))
        ctx.defaults["security_groups"] = [made["GroupId"]]
        return str(made["GroupId"])

    return Planned(ProvisionStep("security group", name, "create",
                                  "outbound traffic only"), create)
