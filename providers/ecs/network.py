"""Where a Fargate task's network interface goes: the awsvpcConfiguration for RunTask.

Given subnets are used as they are. Without them, the subnets of ``vpc_id`` (or of the
region's default VPC) and that VPC's "default" security group are looked up once per
connection and VPC and cached; concurrent first submits share one lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.base import PermanentProviderError
from providers.ecs.aws import AwsClients, Connection, SingleFlight
from providers.ecs.config import EcsConfig

MAX_SUBNETS = 16  # awsvpcConfiguration's limit


@dataclass(frozen=True)
class VpcDefaults:
    vpc_id: str
    subnets: list[str]
    security_group: str | None


class NetworkDefaults:
    def __init__(self, aws: AwsClients):
        self._aws = aws
        self._cache: dict[tuple[Connection, str | None], VpcDefaults] = {}
        self._flights = SingleFlight()

    async def awsvpc(self, conn: Connection, cfg: EcsConfig) -> dict[str, Any]:
        """RunTask's ``networkConfiguration`` for one configuration."""
        subnets = list(cfg.subnets or [])
        groups = list(cfg.security_groups) if cfg.security_groups is not None else None
        if not subnets:
            vpc = await self.vpc(conn, cfg.vpc_id)
            subnets = vpc.subnets
            if groups is None and vpc.security_group:
                groups = [vpc.security_group]
        # Always send securityGroups: an empty list means the VPC's default group on
        # AWS (and moto fails without the key).
        return {"awsvpcConfiguration": {
            "subnets": subnets, "securityGroups": groups or [],
            "assignPublicIp": "ENABLED" if cfg.assign_public_ip else "DISABLED"}}

    async def vpc(self, conn: Connection, vpc_id: str | None) -> VpcDefaults:
        key = (conn, vpc_id)
        cached = self._cache.get(key)
        if cached is None:
            cached = await self._flights.run(key, lambda: self._discover(conn, vpc_id))
            self._cache[key] = cached
        return cached

    async def _discover(self, conn: Connection, vpc_id: str | None) -> VpcDefaults:
        if vpc_id:
            vpcs = await self._aws.call(conn, "ec2", "describe_vpcs", VpcIds=[vpc_id])
        else:
            vpcs = await self._aws.call(conn, "ec2", "describe_vpcs", Filters=[
                {"Name": "isDefault", "Values": ["true"]}])
        if not vpcs.get("Vpcs"):
            raise PermanentProviderError(
                f"subnets: none given and region {conn.region} has no default VPC; set "
                "subnets (or vpc_id), or provision the pool with --provision-infra")
        vpc = vpcs["Vpcs"][0]
        in_vpc = [{"Name": "vpc-id", "Values": [vpc["VpcId"]]}]
        subnet_filters = in_vpc + ([{"Name": "default-for-az", "Values": ["true"]}]
                                   if vpc.get("IsDefault") else [])
        subnets = await self._aws.call(conn, "ec2", "describe_subnets", Filters=subnet_filters)
        ids = sorted(s["SubnetId"] for s in subnets.get("Subnets") or [])[:MAX_SUBNETS]
        if not ids:
            raise PermanentProviderError(
                f"subnets: VPC {vpc['VpcId']} has no subnets; set subnets in the pool")
        groups = await self._aws.call(conn, "ec2", "describe_security_groups", Filters=[
            *in_vpc, {"Name": "group-name", "Values": ["default"]}])
        group_list = groups.get("SecurityGroups") or []
        return VpcDefaults(vpc["VpcId"], ids, group_list[0]["GroupId"] if group_list else None)
