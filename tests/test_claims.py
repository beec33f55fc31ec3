"""Claiming: order by queue priority then time, every concurrency limit, leases, pauses."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from dispatcher import store
from dispatcher.models import (
    DeploymentApply,
    RunCreate,
    RunState,
    WorkPoolCreate,
    WorkPoolUpdate,
    WorkQueueCreate,
    WorkQueueUpdate,
)
from dispatcher.store import Database
from dispatcher.store.common import utcnow

CMD = ["true"]


async def _setup(db: Database, *, pool_limit: int | None = None) -> None:
    await store.create_pool(db, WorkPoolCreate(name="p", type="process",
                                               concurrency_limit=pool_limit))
    await store.create_queue(db, "p", WorkQueueCreate(name="low", priority=5))
    await store.create_queue(db, "p", WorkQueueCreate(name="high", priority=1))


async def _deploy(db: Database, name: str, queue: str = "default",
                  limit: int | None = None) -> None:
    await store.apply_deployment(db, DeploymentApply(
        name=name, flow_name="f", pool_name="p", queue_name=queue, command=CMD,
        concurrency_limit=limit))


async def _run(db: Database, deployment: str, seconds_ago: float = 10) -> str:
    run, _ = await store.create_run(db, f"f/{deployment}", RunCreate(
        scheduled_time=utcnow() - timedelta(seconds=seconds_ago)))
    return run.id


async def _claim(db: Database, limit: int = 50, owner: str = "me",
                 lease: float = 60) -> list[str]:
    return [c.run_id for c in await store.claim_due_runs(db, owner, limit=limit,
                                                         lease_seconds=lease)]


async def test_priority_first_then_scheduled_time(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "slow", queue="low")
    await _deploy(db, "fast", queue="high")
    low_old = await _run(db, "slow", seconds_ago=100)
    high_new = await _run(db, "fast", seconds_ago=1)
    high_old = await _run(db, "fast", seconds_ago=50)
    assert await _claim(db, limit=2) == [high_old, high_new]
    assert await _claim(db, limit=2) == [low_old]


async def test_future_runs_are_not_claimed(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    await _run(db, "d", seconds_ago=-3600)
    assert await _claim(db) == []


async def test_pool_limit_holds_and_frees_when_a_run_ends(db: Database) -> None:
    await _setup(db, pool_limit=2)
    await _deploy(db, "d")
    ids = [await _run(db, "d", seconds_ago=10 - i) for i in range(5)]
    first = await _claim(db)
    assert first == ids[:2]
    assert await _claim(db) == []
    await store.set_run_state(db, first[0], RunState.FAILED, "done")
    assert await _claim(db) == [ids[2]]


async def test_queue_limit(db: Database) -> None:
    await _setup(db)
    await store.update_queue(db, "p", "default", WorkQueueUpdate(concurrency_limit=1))
    await _deploy(db, "a")
    await _deploy(db, "b", queue="low")
    a1, a2 = await _run(db, "a", 20), await _run(db, "a", 19)
    b1 = await _run(db, "b", 18)
    assert sorted(await _claim(db)) == sorted([a1, b1])
    assert a2 not in await _claim(db)


async def test_deployment_limit_does_not_starve_others(db: Database) -> None:
    """Prefect #19403: runs held by one deployment's limit must not block other work."""
    await _setup(db)
    await _deploy(db, "busy", limit=1)
    await _deploy(db, "other")
    busy = [await _run(db, "busy", 100 - i) for i in range(10)]
    other = [await _run(db, "other", 50 - i) for i in range(3)]
    assert await _claim(db, limit=4) == [busy[0], *other]
    assert await _claim(db, limit=4) == []


async def test_paused_pool_and_queue_keep_runs_scheduled(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    await _deploy(db, "h", queue="high")
    d = await _run(db, "d")
    h = await _run(db, "h")
    await store.update_pool(db, "p", WorkPoolUpdate(paused=True))
    assert await _claim(db) == []
    await store.update_pool(db, "p", WorkPoolUpdate(paused=False))
    await store.update_queue(db, "p", "high", WorkQueueUpdate(paused=True))
    assert await _claim(db) == [d]
    assert (await store.get_run(db, h)).state is RunState.SCHEDULED
    await store.update_queue(db, "p", "high", WorkQueueUpdate(paused=False))
    assert await _claim(db) == [h]


async def test_expired_lease_is_reclaimed_with_the_same_attempt(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    run_id = await _run(db, "d")
    claimed = await store.claim_due_runs(db, "ghost", limit=5, lease_seconds=0.01)
    assert [c.attempt for c in claimed] == [1]
    later = utcnow() + timedelta(seconds=1)
    again = await store.claim_due_runs(db, "heir", limit=5, lease_seconds=60, now=later)
    assert [(c.run_id, c.attempt) for c in again] == [(run_id, 1)]
    run = await store.get_run(db, run_id)
    assert run.state is RunState.PENDING
    assert "reclaimed by heir" in (run.history[-1].message or "")


async def test_live_lease_is_not_reclaimed(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    await _run(db, "d")
    assert len(await _claim(db, owner="a", lease=60)) == 1
    assert await _claim(db, owner="b") == []


async def test_concurrent_claimers_never_share_a_run_or_break_limits(db: Database) -> None:
    await _setup(db, pool_limit=7)
    await _deploy(db, "d")
    for i in range(20):
        await _run(db, "d", 100 - i)
    results = await asyncio.gather(*[_claim(db, limit=3, owner=f"r{i}") for i in range(6)])
    claimed = [run_id for batch in results for run_id in batch]
    assert len(claimed) == len(set(claimed)) == 7


async def test_submission_record_needs_the_lease(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    run_id = await _run(db, "d")
    await _claim(db, owner="a")
    record = store.SubmissionRecord(run_id, "infra-1", None, {}, None, "submitted")
    await store.record_submissions(db, "intruder", [record])
    assert (await store.get_run(db, run_id)).infra_id is None
    await store.record_submissions(db, "a", [record])
    run = await store.get_run(db, run_id)
    assert run.infra_id == "infra-1"
    watched = await store.runs_to_watch(db)
    assert [w.run_id for w in watched] == [run_id]


async def test_release_claims_makes_runs_claimable_again(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    run_id = await _run(db, "d")
    await _claim(db, owner="a")
    await store.release_claims(db, "a", [run_id], "shutting down")
    assert (await store.get_run(db, run_id)).state is RunState.SCHEDULED
    assert await _claim(db, owner="b") == [run_id]


@pytest.mark.parametrize("state", [RunState.SCHEDULED, RunState.PENDING])
async def test_next_wakeup_is_the_earliest_due_time(db: Database, state: RunState) -> None:
    await _setup(db)
    await _deploy(db, "d")
    assert await store.next_wakeup(db) is None
    when = utcnow() + timedelta(minutes=5)
    await store.create_run(db, "f/d", RunCreate(scheduled_time=when))
    wake = await store.next_wakeup(db)
    assert wake is not None and abs((wake - when).total_seconds()) < 0.01
    await store.update_pool(db, "p", WorkPoolUpdate(paused=True))
    assert await store.next_wakeup(db) is None
