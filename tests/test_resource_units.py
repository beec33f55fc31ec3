"""cpu and memory job variables reach each cloud in its own units: Cloud Run's quantities
("1000m", "512Mi"), ACI's fractional GB and cores, Modal's fractional cores. The core
passes them through untouched; each adapter reads and checks its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import operations, store
from dispatcher.engine.engine import Engine
from dispatcher.engine.jobspec import build_job_spec
from dispatcher.errors import InvalidInput
from dispatcher.models import DeploymentApply, RunCreate, RunState, WorkPoolCreate
from dispatcher.settings import Settings
from dispatcher.store import ClaimedRun, Database
from dispatcher.store.common import utcnow
from providers import registry
from providers.aci.body import _amount
from providers.cloud_run.config import memory_mib
from providers.ecs.config import aws_units
from tests.conftest import wait_for
from tests.fakes.azure import shared_fake as shared_azure
from tests.fakes.cloud_run import shared_fake as shared_google
from tests.providers.aci_harness import RESOURCE_GROUP, aci_config
from tests.providers.cloud_run_harness import cloud_run_config


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    yield database
    await database.close()


async def run_once(db: Database, pool_type: str, job_variables: dict[str, Any]) -> str:
    """A deployment with these job variables on a pool of this type, one run of it
    dispatched by a real engine; returns the run id once the provider took it."""
    await operations.pools.create_pool(db, WorkPoolCreate(name="p", type=pool_type))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="p", command=["python", "-c", "print(1)"],
        job_variables=job_variables))
    run, _ = await operations.runs.create_run(db, "f/d", RunCreate())
    engine = Engine(db, Settings(watch_interval_seconds=30, scheduler_interval_seconds=3600,
                                 submit_timeout_seconds=20))
    await engine.start()
    try:
        async def submitted() -> bool:
            got = await store.get_run(db, run.id)
            assert got.state not in (RunState.FAILED, RunState.CRASHED), got.state_message
            return got.infra_id is not None

        await wait_for(submitted, timeout=20, what="the run submitted")
    finally:
        await engine.stop()
    return run.id


async def test_cloud_run_takes_kubernetes_quantities(db: Database) -> None:
    fake = shared_google()
    fake.reset()
    await run_once(db, "cloud-run:push",
                   cloud_run_config(fake, cpu="1000m", memory="512Mi"))
    (job,) = fake.run.jobs.values()
    limits = job["template"]["template"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "1", "memory": "512Mi"}
    assert fake.server.calls["jobs.run"] == 1


async def test_aci_takes_fractional_gigabytes(db: Database) -> None:
    fake = shared_azure()
    fake.reset()
    fake.resources.add_resource_group(fake.subscription, RESOURCE_GROUP)
    await run_once(db, "azure-container-instance:push", aci_config(fake, memory=2.5, cpu=0.5))
    (group,) = fake.aci.groups.values()
    requests = group["properties"]["containers"][0]["properties"]["resources"]["requests"]
    assert (requests["memoryInGB"], requests["cpu"]) == (2.5, 0.5)


def claimed(pool_type: str, job_variables: dict[str, Any]) -> ClaimedRun:
    return ClaimedRun(
        run_id="r1", name="r1", attempt=1, scheduled_time=utcnow(), pool_name="p",
        pool_type=pool_type, base_job_template=registry.get_provider(pool_type)
        .default_base_job_template(), queue_name="default", deployment_id="d1",
        deployment_name="d", flow_name="f", command=["true"], entrypoint=None, source=None,
        image="img", deployment_job_variables=job_variables, run_job_variables={},
        parameters={})


def no_identity(run: ClaimedRun, timeout: int | None) -> dict[str, str]:
    return {}


@pytest.mark.parametrize(("pool_type", "cpu", "memory"), [
    ("cloud-run:push", "1000m", "512Mi"),
    ("azure-container-instance:push", 0.5, 1.5),  # int() made the 1.5 GB 1
    ("modal:push", 0.25, 1024),
    ("ecs:push", 512, 1024),
])
def test_the_job_spec_carries_cpu_and_memory_as_given(pool_type: str, cpu: Any,
                                                       memory: Any) -> None:
    required = {"subscription_id": "s", "resource_group_name": "rg"} \
        if pool_type.startswith("azure") else {}
    spec = build_job_spec(claimed(pool_type, {"cpu": cpu, "memory": memory, **required}),
                          no_identity)
    assert (spec.cpu, spec.memory) == (cpu, memory)
    assert type(spec.memory) is type(memory)  # 1.5 GB is not 1


async def test_ecs_still_refuses_cpu_it_cannot_read_at_deployment_time(
        db: Database) -> None:
    await operations.pools.create_pool(db, WorkPoolCreate(name="aws", type="ecs:push"))
    with pytest.raises(InvalidInput) as refused:
        await operations.deployments.apply_deployment(db, DeploymentApply(
            name="d", flow_name="f", pool_name="aws", image="img", command=["true"],
            job_variables={"cpu": "1000m"}))
    assert refused.value.field == "job_variables.cpu"
    with pytest.raises(ValueError, match=r"cpu: 0\.5 is not a whole number of CPU units"):
        aws_units(0.5, "cpu")
    assert aws_units("0.5 vCPU", "cpu") == 512


def test_each_adapter_names_the_field_of_a_quantity_it_cannot_read() -> None:
    with pytest.raises(ValueError, match=r"memory: 1\.5 is not a memory quantity"):
        memory_mib(1.5)
    with pytest.raises(ValueError, match="cpu: 'lots' is not a positive number of cores"):
        _amount("cpu", None, "lots", 1.0, "cores")
    assert _amount("memory", None, "2.5", 1.5, "GB") == 2.5


@pytest.mark.parametrize(("pool_type", "variables", "message"), [
    ("cloud-run:push", {"cpu": "3"}, "cpu: 3 is not a Cloud Run CPU limit"),
    ("cloud-run:push", {"memory": "512MB"}, "memory: '512MB' is not a memory quantity"),
    ("azure-container-instance:push", {"memory": 1.55},
     "memory: 1.55 GB is not a multiple of 0.1 GB"),
])
async def test_a_quantity_the_cloud_cannot_use_is_refused_at_deployment_time(
        db: Database, pool_type: str, variables: dict[str, Any], message: str) -> None:
    await operations.pools.create_pool(db, WorkPoolCreate(name="p", type=pool_type))
    if pool_type.startswith("azure"):
        variables = aci_config(shared_azure(), **variables)
    with pytest.raises(InvalidInput, match=message):
        await operations.deployments.apply_deployment(db, DeploymentApply(
            name="d", flow_name="f", pool_name="p", image="img", command=["true"],
            job_variables=variables))
    assert await store.list_deployments(db) == []
