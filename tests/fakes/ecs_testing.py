"""Helpers for the ECS adapter tests: a handle on the reset moto, job specs, fast settings.

The fixtures that build these live in ``tests/ecs_fixtures.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from providers.base import JobSpec
from providers.ecs import EcsSettings
from tests.fakes.moto_ecs import ACCOUNT, REGION, MotoEcs

CLUSTER = "pushpool-test"
EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/pushpool-test-execution"
_CLIENTS: dict[tuple[str, str], Any] = {}  # boto3 clients are slow to make; share them


@dataclass
class Aws:
    """A reset moto behind the proxy, and boto3 clients for a test's own setup and checks."""

    server: MotoEcs
    region: str = REGION

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self.region)
        if key not in _CLIENTS:
            _CLIENTS[key] = boto3.client(
                service, endpoint_url=self.server.url, region_name=key[1],
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=Config(retries={"total_max_attempts": 1}))
        client = _CLIENTS[key]
        if client.meta.endpoint_url != self.server.url:
            del _CLIENTS[key]
            return self.client(service, region)
        return client

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A rendered ecs:push job configuration pointing at moto."""
        return {"region": self.region, "endpoint_url": self.server.url, "cluster": CLUSTER,
                "image": "ghcr.io/example/flows:1", "execution_role_arn": EXECUTION_ROLE,
                **overrides}

    def spec(self, run_id: str | None = None, *, attempt: int = 1,
             config: dict[str, Any] | None = None, **fields: Any) -> JobSpec:
        run_id = run_id or str(uuid.uuid4())
        return JobSpec(run_id=run_id, job_name=f"job-{run_id[:8]}", image=fields.pop(
            "image", None), command=fields.pop("command", ["python", "-m", "flows.hello"]),
            env=fields.pop("env", {"PUSHPOOL_RUN_ID": run_id}), attempt=attempt,
            pool_name=fields.pop("pool_name", "ecs-pool"),
            deployment_id=fields.pop("deployment_id", "dep-1"),
            labels=fields.pop("labels", {"pushpool.run": run_id}),
            config=config if config is not None else self.config(), **fields)

    def tasks_in_cluster(self, cluster: str = CLUSTER) -> list[str]:
        return list(self.client("ecs").list_tasks(cluster=cluster)["taskArns"])

    def task_definitions(self) -> list[str]:
        return list(self.client("ecs").list_task_definitions()["taskDefinitionArns"])


def fast_settings(**overrides: Any) -> EcsSettings:
    values: dict[str, Any] = {"backoff_base": 0.005, "backoff_cap": 0.02, "max_workers": 16}
    return EcsSettings(**{**values, **overrides})
