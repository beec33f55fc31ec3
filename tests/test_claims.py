"""Claiming: order by queue priority then time, every concurrency limit, leases, pauses."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from dispatcher import operations, store
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
    await operations.pools.create_pool(db, WorkPoolCreate(name="p", type="process",
                                               concurrency_limit=pool_limit))
    await store.create_queue(db, "p", WorkQueueCreate(name="low", priority=5))
    await store.create_queue(db, "p", WorkQueueCreate(name="high", priority=1))


async def _deploy(db: Database, name: str, queue: str = "default",
                  limit: int | None = None) -> None:
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name=name, flow_name="f", pool_name="p", queue_name=queue, command=CMD,
        concurrency_limit=limit))


async def _run(db: Database, deployment: str, seconds_ago: float = 10) -> str:
    run, _ = await operations.runs.create_run(db, f"f/{deployment}", RunCreate(
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


async def test_run_cancelled_under_a_dead_claimers_lease_is_reclaimed_to_find_its_job(
        db: Database) -> None:
    # The claimer may have made the job and died before recording it: only a resubmit with
    # the same attempt (idempotent) learns the job's id, so the watcher can cancel it.
    await _setup(db)
    await _deploy(db, "d")
    run_id = await _run(db, "d")
    await store.claim_due_runs(db, "ghost", limit=5, lease_seconds=0.01)
    await store.cancel_run(db, run_id)
    later = utcnow() + timedelta(seconds=1)
    assert await store.next_wakeup(db) is not None
    again = await store.claim_due_runs(db, "heir", limit=5, lease_seconds=60, now=later)
    assert [(c.run_id, c.attempt, c.reclaimed) for c in again] == [(run_id, 1, True)]
    await store.record_submissions(db, "heir", [store.SubmissionRecord(
        run_id=run_id, infra_id="job-1", console_url=None, job_configuration={},
        timeout_seconds=None, message="submitted as job-1")])
    run = await store.get_run(db, run_id)
    assert (run.state, run.infra_id) == (RunState.CANCELLING, "job-1")
    assert [h.state for h in run.history[-2:]] == [RunState.CANCELLING] * 2


async def test_run_cancelled_in_hand_and_handed_back_is_not_reclaimed(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    run_id = await _run(db, "d")
    assert await _claim(db, owner="a", lease=0.01) == [run_id]
    await store.cancel_run(db, run_id)
    await store.release_claims(db, "a", [run_id], "handed back: stopping")
    later = utcnow() + timedelta(seconds=1)
    assert await store.claim_due_runs(db, "b", limit=5, lease_seconds=60, now=later) == []
    watched = {r.run_id: r for r in await store.runs_to_watch(db)}
    assert watched[run_id].lease_owner is None  # so the watcher ends it, nothing sent


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


async def test_a_run_recorded_twice_in_one_batch_is_recorded_once(db: Database) -> None:
    # A record queued through a database outage, and the record of the resubmission made
    # after its lease ran out, can reach the store in the same batch.
    await _setup(db)
    await _deploy(db, "d")
    run_id = await _run(db, "d")
    await _claim(db, owner="a")
    first = store.SubmissionRecord(run_id, "infra-1", None, {}, None, "submitted first")
    again = store.SubmissionRecord(run_id, "infra-1", None, {}, None, "submitted again")
    await store.record_submissions(db, "a", [first, again])
    run = await store.get_run(db, run_id)
    assert run.infra_id == "infra-1"
    submitted = [h.message for h in run.history if (h.message or "").startswith("submitted")]
    assert submitted == ["submitted again"]


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
    await operations.runs.create_run(db, "f/d", RunCreate(scheduled_time=when))
    wake = await store.next_wakeup(db)
    assert wake is not None and abs((wake - when).total_seconds()) < 0.01
    await store.update_pool(db, "p", WorkPoolUpdate(paused=True))
    assert await store.next_wakeup(db) is None


async def test_queues_of_equal_priority_are_claimed_by_time(db: Database) -> None:
    # Due runs are read queue by queue (store/claims.py); the batch still merges them.
    await _setup(db)
    await store.create_queue(db, "p", WorkQueueCreate(name="twin", priority=1))
    await _deploy(db, "a", queue="high")
    await _deploy(db, "b", queue="twin")
    a_old = await _run(db, "a", seconds_ago=40)
    b_mid = await _run(db, "b", seconds_ago=30)
    a_new = await _run(db, "a", seconds_ago=20)
    b_new = await _run(db, "b", seconds_ago=10)
    assert await _claim(db, limit=3) == [a_old, b_mid, a_new]
    assert await _claim(db, limit=3) == [b_new]


async def test_next_wakeup_skips_a_paused_queue(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    await _deploy(db, "h", queue="high")
    soon, later = utcnow() + timedelta(minutes=1), utcnow() + timedelta(minutes=9)
    await operations.runs.create_run(db, "f/h", RunCreate(scheduled_time=soon))
    await operations.runs.create_run(db, "f/d", RunCreate(scheduled_time=later))
    await store.update_queue(db, "p", "high", WorkQueueUpdate(paused=True))
    wake = await store.next_wakeup(db)
    assert wake is not None and abs((wake - later).total_seconds()) < 0.01
