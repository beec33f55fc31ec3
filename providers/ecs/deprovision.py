"""Undo ``--provision-infra`` for ecs:push: remove what pushpool made for a pool, only that.

A resource is removed only if it carries ``pushpool:pool=<pool>``; a resource of the same
name without the tag (the user's own) is kept, and one already gone is reported absent.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from providers.base import ProviderError, ProvisionPlan, ProvisionStep
from providers.ecs.aws import AwsClients
from providers.ecs.provision import (
    POOL_TAG,
    Apply,
    Context,
    Planned,
    find_log_group,
    find_repository,
    has_pool_tag,
    iam_role_exists,
    identity,
    names_for,
    stopped,
)


def _recorded(provisioned: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(options, [(resource, name)]) from what the dispatcher stored after provisioning.

    Accepts the plan as a dict (``dataclasses.asdict``), with optional ``options``.
    """
    defaults = provisioned.get("template_defaults") or {}
    options: dict[str, Any] = {**defaults, **(provisioned.get("options") or {})}
    if not options.get("region"):
        match = re.search(r"region ([a-z0-9-]+)", str(provisioned.get("target") or ""))
        if match:
            options["region"] = match.group(1)
    steps = []
    for step in provisioned.get("steps") or []:
        item = step if isinstance(step, Mapping) else dataclasses.asdict(step)
        steps.append((str(item.get("resource")), str(item.get("name"))))
    return options, steps


async def deprovision(aws: AwsClients, pool_name: str, provisioned: Mapping[str, Any],
                      apply: bool, *, on_step: Callable[[ProvisionStep], None] | None = None
                      ) -> ProvisionPlan:
    """Plan or remove what provisioning made for ``pool_name``: only resources tagged
    ``pushpool:pool=<pool_name>``. Steps are "delete", "keep" (exists but not ours) or
    "absent" (already gone)."""
    options, recorded = _recorded(provisioned)
    conn, account, partition = await identity(aws, options)
    names = names_for(pool_name, options)
    ctx = Context(aws, conn, pool_name, names, options, account, partition)

    def recorded_names(resource: str, default: str) -> list[str]:
        found = [n for r, n in recorded if r == resource]
        return list(dict.fromkeys([*found, default]))

    planned: list[Planned] = []
    for cluster in recorded_names("ecs cluster", names.cluster):
        planned.append(await _unplan_cluster(ctx, cluster))
    for role in recorded_names("iam role", names.role):
        planned.append(await _unplan_role(ctx, role))
    for group in recorded_names("log group", names.log_group):
        planned.append(await _unplan_log_group(ctx, group))
    for repo in recorded_names("ecr repository", names.repository):
        planned.append(await _unplan_repository(ctx, repo))
    planned.extend(await _unplan_network(ctx))

    steps: list[ProvisionStep] = []
    for index, item in enumerate(planned):
        if apply and item.apply is not None:
            try:
                await item.apply()
            except ProviderError as exc:
                raise stopped("deprovisioning", pool_name, item.step, exc, steps,
                               [p.step for p in planned[index + 1:] if p.apply]) from exc
        steps.append(item.step)
        if on_step is not None:
            on_step(item.step)
    return ProvisionPlan(target=f"account {account}, region {conn.region}", steps=steps)


def _keep(resource: str, name: str) -> Planned:
    return Planned(ProvisionStep(resource, name, "keep",
                                  f"not made by pushpool (no {POOL_TAG} tag for this pool)"))


def _absent(resource: str, name: str) -> Planned:
    return Planned(ProvisionStep(resource, name, "absent", "already gone"))


async def _unplan_cluster(ctx: Context, name: str) -> Planned:
    answer = await ctx.call("ecs", "describe_clusters", clusters=[name], include=["TAGS"])
    cluster = next((c for c in answer.get("clusters") or [] if c.get("status") == "ACTIVE"),
                   None)
    if cluster is None:
        return _absent("ecs cluster", name)
    if not has_pool_tag(cluster.get("tags"), ctx.pool_name):
        return _keep("ecs cluster", name)

    async def delete() -> str | None:
        await ctx.call("ecs", "delete_cluster", cluster=name)
        return None

    return Planned(ProvisionStep("ecs cluster", name, "delete"), delete)


async def _unplan_role(ctx: Context, name: str) -> Planned:
    if not await iam_role_exists(ctx, name):
        return _absent("iam role", name)
    tags = await ctx.call("iam", "list_role_tags", RoleName=name)
    if not has_pool_tag(tags.get("Tags"), ctx.pool_name):
        return _keep("iam role", name)

    async def delete() -> str | None:
        attached = await ctx.call("iam", "list_attached_role_policies", RoleName=name)
        for policy in attached.get("AttachedPolicies") or []:
            await ctx.call("iam", "detach_role_policy", RoleName=name,
                           PolicyArn=policy["PolicyArn"])
        inline = await ctx.call("iam", "list_role_policies", RoleName=name)
        for policy_name in inline.get("PolicyNames") or []:
            await ctx.call("iam", "delete_role_policy", RoleName=name, PolicyName=policy_name)
        await ctx.call("iam", "delete_role", RoleName=name)
        return None

    return Planned(ProvisionStep("iam role", name, "delete", "with its policies"), delete)


async def _unplan_log_group(ctx: Context, name: str) -> Planned:
    group = await find_log_group(ctx, name)
    if group is None:
        return _absent("log group", name)
    tags = await ctx.call("logs", "list_tags_log_group", logGroupName=name)
    if not has_pool_tag(tags.get("tags"), ctx.pool_name):
        return _keep("log group", name)

    async def delete() -> str | None:
        await ctx.call("logs", "delete_log_group", logGroupName=name)
        return None

    return Planned(ProvisionStep("log group", name, "delete", "and its log streams"),
                    delete)


async def _unplan_repository(ctx: Context, name: str) -> Planned:
    repo = await find_repository(ctx, name)
    if repo is None:
        return _absent("ecr repository", name)
    tags = await ctx.call("ecr", "list_tags_for_resource", resourceArn=repo["repositoryArn"])
    if not has_pool_tag(tags.get("tags"), ctx.pool_name):
        return _keep("ecr repository", name)

    async def delete() -> str | None:
        await ctx.call("ecr", "delete_repository", repositoryName=name, force=True)
        return None

    return Planned(ProvisionStep("ecr repository", name, "delete", "and its images"), delete)


async def _unplan_network(ctx: Context) -> list[Planned]:
    """Every EC2 resource tagged for the pool, in an order EC2 accepts."""
    tagged = [{"Name": f"tag:{POOL_TAG}", "Values": [ctx.pool_name]}]
    planned: list[Planned] = []

    def deleting(resource: str, name: str, action: Apply) -> None:
        planned.append(Planned(ProvisionStep(resource, name, "delete"), action))

    groups = await ctx.call("ec2", "describe_security_groups", Filters=tagged)
    for group in groups.get("SecurityGroups") or []:
        async def delete_group(group_id: str = group["GroupId"]) -> str | None:
            await ctx.call("ec2", "delete_security_group", GroupId=group_id)
            return None
        deleting("security group", group["GroupId"], delete_group)

    tables = await ctx.call("ec2", "describe_route_tables", Filters=tagged)
    for table in tables.get("RouteTables") or []:
        async def delete_table(table: Mapping[str, Any] = table) -> str | None:
            for assoc in table.get("Associations") or []:
                if not assoc.get("Main"):
                    await ctx.call("ec2", "disassociate_route_table",
                                   AssociationId=assoc["RouteTableAssociationId"])
            await ctx.call("ec2", "delete_route_table", RouteTableId=table["RouteTableId"])
            return None
        deleting("route table", table["RouteTableId"], delete_table)

    subnets = await ctx.call("ec2", "describe_subnets", Filters=tagged)
    for subnet in subnets.get("Subnets") or []:
        async def delete_subnet(subnet_id: str = subnet["SubnetId"]) -> str | None:
            await ctx.call("ec2", "delete_subnet", SubnetId=subnet_id)
            return None
        deleting("subnet", subnet["SubnetId"], delete_subnet)

    gateways = await ctx.call("ec2", "describe_internet_gateways", Filters=tagged)
    for gateway in gateways.get("InternetGateways") or []:
        async def delete_gateway(gateway: Mapping[str, Any] = gateway) -> str | None:
            for attachment in gateway.get("Attachments") or []:
                await ctx.call("ec2", "detach_internet_gateway",
                               InternetGatewayId=gateway["InternetGatewayId"],
                               VpcId=attachment["VpcId"])
            await ctx.call("ec2", "delete_internet_gateway",
                           InternetGatewayId=gateway["InternetGatewayId"])
            return None
        deleting("internet gateway", gateway["InternetGatewayId"], delete_gateway)

    vpcs = await ctx.call("ec2", "describe_vpcs", Filters=tagged)
    for vpc in vpcs.get("Vpcs") or []:
        async def delete_vpc(vpc_id: str = vpc["VpcId"]) -> str | None:
            await ctx.call("ec2", "delete_vpc", VpcId=vpc_id)
            return None
        deleting("vpc", vpc["VpcId"], delete_vpc)
    return planned
