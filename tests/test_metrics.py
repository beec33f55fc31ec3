"""GET /metrics: Prometheus text format behind the API token, store-wide gauges read at
scrape time, and the engine's counters and dispatch-latency histogram moving as it works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from dispatcher import operations, store
from dispatcher.api import create_app
from dispatcher.engine.engine import Engine
from dispatcher.engine.scheduler import run_rows
from dispatcher.metrics import REGISTRY
from dispatcher.models import DeploymentApply, RunCreate, RunState, ScheduleSpec, WorkPoolCreate
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from providers import registry
from tests.conftest import wait_for
from tests.fakes.faulty_provider import FAULTS
from tests.fakes.recording_provider import STATE
from tests.fakes.scheduled_runs import active_schedules, insert_scheduled_runs

registry.register_provider("faulty", "tests.fakes.faulty_provider")

Client = TestClient[web.Request, web.Application]
TOKEN = "metrics-test-token"


pytestmark = pytest.mark.usefixtures("fresh_faulty_provider")


@pytest.fixture
async def pools(db: Database) -> Database:
    await operations.pools.create_pool(db, WorkPoolCreate(name="p", type="faulty"))
    await operations.pools.create_pool(db, WorkPoolCreate(name="q", type="faulty"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="p", command=["job"]))
    return db


async def serve(db: Database, settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(db, None, settings))) as client:
        yield client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_are_text_with_runs_by_state_and_breaker_state(
        pools: Database, tmp_path: Path) -> None:
    for _ in range(2):
        await operations.runs.create_run(pools, "f/d", RunCreate(
            scheduled_time=utcnow() + timedelta(hours=1)))
    failed, _ = await operations.runs.create_run(pools, "f/d", RunCreate())
    await store.set_run_state(pools, failed.id, RunState.FAILED, "no")
    await store.open_pool_breaker(pools, "q", "circuit breaker: test", utcnow())
    async for client in serve(pools, Settings(home=tmp_path, api_token=None)):
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
        found = samples(text)
    assert found[("pushpool_runs", (("pool", "p"), ("state", "SCHEDULED")))] == 2
    assert found[("pushpool_runs", (("pool", "p"), ("state", "FAILED")))] == 1
    assert ("pushpool_runs", (("pool", "q"), ("state", "SCHEDULED"))) not in found
    assert found[("pushpool_breaker_open", (("pool", "q"),))] == 1
    assert found[("pushpool_breaker_open", (("pool", "p"),))] == 0
    for family in ("pushpool_dispatch_latency_seconds histogram",
                   "pushpool_submits_total counter", "pushpool_submit_retries_total counter",
                   "pushpool_submit_throttles_total counter",
                   "pushpool_lease_expiries_total counter",
                   "pushpool_breaker_trips_total counter", "pushpool_dead_letters_total counter",
                   "process_cpu_seconds_total counter"):
        assert f"# TYPE {family}" in text


async def test_metrics_need_the_api_token_when_one_is_set(pools: Database,
                                                         tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, api_token=SecretStr(TOKEN))
    async for client in serve(pools, settings):
        assert (await client.get("/metrics")).status == 401
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status == 200 and "pushpool_runs" in await answer.text()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_engine_counts_what_it_does(pools: Database) -> None:
    submitted = dict(name="pushpool_submits_total", pool_type="faulty", outcome="submitted")
    throttled = dict(name="pushpool_submits_total", pool_type="faulty", outcome="throttled")
    timeouts = dict(name="pushpool_submits_total", pool_type="faulty", outcome="timeout")
    counters = {
        "submitted": submitted, "throttled": throttled, "timeout": timeouts,
        "retries": dict(name="pushpool_submit_retries_total", pool_type="faulty"),
        "throttles": dict(name="pushpool_submit_throttles_total", pool_type="faulty"),
        "expiries": dict(name="pushpool_lease_expiries_total", pool_type="faulty"),
        "refused": dict(name="pushpool_dead_letters_total", reason="refused"),
        "latency": dict(name="pushpool_dispatch_latency_seconds_count", pool_type="faulty"),
    }
    before = {k: value(**c) for k, c in counters.items()}

    throttled_run, _ = await operations.runs.create_run(pools, "f/d", RunCreate())
    STATE.retryable_failures[throttled_run.id] = 2  # the inner provider throttles twice
    slow, _ = await operations.runs.create_run(pools, "f/d", RunCreate())
    FAULTS.hang_first[slow.id] = 1
    refused, _ = await operations.runs.create_run(pools, "f/d", RunCreate())
    FAULTS.permanent[refused.id] = "bad image"
    await operations.runs.create_run(pools, "f/d", RunCreate())
    await store.claim_due_runs(pools, "vanished", limit=10, lease_seconds=0.2)

    engine = Engine(pools, Settings(
        lease_seconds=30, watch_interval_seconds=0.05, scheduler_interval_seconds=3600,
        submit_timeout_seconds=0.2, submit_backoff_base_seconds=0.01,
        submit_backoff_cap_seconds=0.05))
    await engine.start()
    try:
        await wait_for(lambda: _all_final(pools, 4), timeout=15, what="all runs final")
    finally:
        await engine.stop()
    after = {k: value(**c) for k, c in counters.items()}
    delta = {k: after[k] - before[k] for k in counters}
    # All four were claimed by "vanished" first: every one comes back as a lease expiry.
    assert delta == {"submitted": 3, "throttled": 2, "timeout": 1, "retries": 3,
                     "throttles": 2, "expiries": 4, "refused": 1, "latency": 0}


async def _all_final(db: Database, count: int) -> bool:
    runs = await store.list_runs(db)
    return len(runs) == count and all(r.state.is_final for r in runs)


async def _final(db: Database, run_id: str) -> bool:
    return (await store.get_run(db, run_id)).state.is_final


async def test_dispatch_latency_and_skipped_runs(pools: Database) -> None:
    latency = dict(name="pushpool_dispatch_latency_seconds_count", pool_type="faulty")
    skipped = dict(name="pushpool_runs_skipped_total", reason="skipped: catchup=none")
    before_latency, before_skipped = value(**latency), value(**skipped)
    await operations.deployments.apply_deployment(pools, DeploymentApply(
        name="nightly", flow_name="f", pool_name="p", command=["job"], catchup="none",
        schedules=[ScheduleSpec(interval=3600)]))
    (target,) = await active_schedules(pools)
    now = utcnow()
    missed = run_rows(target, [now - timedelta(seconds=600), now - timedelta(seconds=300)],
                      now)
    await insert_scheduled_runs(pools, missed)
    ran, _ = await operations.runs.create_run(pools, "f/d", RunCreate())
    engine = Engine(pools, Settings(lease_seconds=30, watch_interval_seconds=0.05,
                                    scheduler_interval_seconds=3600))
    await engine.start()
    try:
        for run_id in [ran.id, *(row["id"] for row in missed)]:
            await wait_for(lambda run_id=run_id: _final(pools, run_id), what="runs final")
    finally:
        await engine.stop()
    assert STATE.submits[ran.id] == 1
    assert value(**latency) - before_latency == 1
    assert value(**skipped) - before_skipped == 2
    assert value("pushpool_dispatch_latency_seconds_sum", pool_type="faulty") > 0
