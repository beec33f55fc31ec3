"""The circuit breaker counts a failure once per provider call, not once per run that waited
on it: the real engine submitting to an ECS pool on moto, one shared lookup failing once."""

from __future__ import annotations

import uuid
from typing import Any

from dispatcher import operations, store
from dispatcher.engine.engine import Engine
from dispatcher.models import DeploymentApply, RunCreate, WorkPoolCreate
from dispatcher.settings import Settings
from dispatcher.store import Database
from providers.ecs.config import default_base_job_template
from tests.conftest import wait_for
from tests.fakes.ecs_testing import Aws

pytest_plugins = ["tests.ecs_fixtures"]

RUNS = 50
THRESHOLD = 10


def pool_template(aws: Aws) -> dict[str, Any]:
    """The default ecs:push template with its defaults pointing at moto."""
    template = default_base_job_template()
    for name, value in aws.config().items():
        template["variables"]["properties"][name]["default"] = value
    return template


async def test_one_failed_shared_lookup_does_not_pause_the_pool(db: Database,
                                                                ecs_aws: Aws) -> None:
    # A pool name of its own: a task definition cached by an earlier test's adapter
    # would skip the lookup this test fails.
    pool = f"fargate-{uuid.uuid4().hex[:8]}"
    await operations.pools.create_pool(db, WorkPoolCreate(
        name=pool, type="ecs:push", base_job_template=pool_template(ecs_aws)))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name=pool, command=["python", "-c", "print(1)"]))
    ids = [(await operations.runs.create_run(db, "f/d", RunCreate()))[0].id
           for _ in range(RUNS)]
    # The 50 submits share one DescribeTaskDefinition (the lookup by content hash).
    ecs_aws.server.add_fault("DescribeTaskDefinition", "503", times=1)
    engine = Engine(db, Settings(
        breaker_failure_threshold=THRESHOLD, claim_batch_size=100,
        submit_backoff_base_seconds=0.02, submit_backoff_cap_seconds=0.2,
        scheduler_interval_seconds=3600, watch_interval_seconds=0.05))
    await engine.start()
    try:
        engine.wake()

        async def settled() -> bool:
            paused = (await store.get_pool(db, pool)).paused
            runs = [await store.get_run(db, run_id) for run_id in ids]
            return paused or all(run.infra_id for run in runs)

        await wait_for(settled, timeout=60, what="every run submitted, or the pool paused")
        assert ecs_aws.server.calls("DescribeTaskDefinition", "faulted") == 1
        row = await store.get_pool(db, pool)
        assert (row.paused, row.paused_reason) == (False, None)
        for run_id in ids:
            run = await store.get_run(db, run_id)
            assert run.infra_id is not None
            assert not any("circuit breaker" in (h.message or "") for h in run.history)
    finally:
        await engine.stop()
