"""Replica heartbeats on both stores: a restarted replica takes its earlier claims back at
once, a silent replica's claims are freed for the others, a clean stop frees what is left;
each freed run is claimed again with its attempt, and nothing recorded or held by a live
replica is touched. Time is passed in, never waited for."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from dispatcher import store
from dispatcher.engine import heartbeat
from dispatcher.engine.replica_id import replica_identity
from dispatcher.store import Database, SubmissionRecord
from dispatcher.store import replicas as store_replicas
from dispatcher.store.common import utcnow
from tests.test_claims import _deploy, _run, _setup

LEASE = 60.0


async def _claim_as(db: Database, owner: str, now: datetime | None = None) -> dict[str, int]:
    """Run id -> attempt of what ``owner`` claims (at ``now``)."""
    claimed = await store.claim_due_runs(db, owner, limit=50, lease_seconds=LEASE,
                                         now=now or utcnow())
    return {c.run_id: c.attempt for c in claimed}


async def _runs_claimed_by(db: Database, owner: str, count: int) -> list[str]:
    ids = [await _run(db, "d") for _ in range(count)]
    assert set(await _claim_as(db, owner)) == set(ids)
    return ids


async def test_a_restarted_replica_takes_back_its_earlier_claims_at_once(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    await store_replicas.register_replica(db, "host:1:old", "replica-a")
    await store_replicas.register_replica(db, "host:2:other", "replica-b")
    mine = await _runs_claimed_by(db, "host:1:old", 2)
    theirs = await _runs_claimed_by(db, "host:2:other", 1)
    recorded, kept = mine
    await store.record_submissions(db, "host:1:old", [SubmissionRecord(
        run_id=recorded, infra_id="job-1", console_url=None, job_configuration={},
        timeout_seconds=None, message="submitted")])
    assert await _claim_as(db, "host:3:new") == {}  # every lease still runs for a minute

    freed = await store_replicas.register_replica(db, "host:3:new", "replica-a")

    assert (freed.owners, freed.runs) == (["host:1:old"], 1)
    assert await _claim_as(db, "host:3:new") == {kept: 1}  # the same attempt
    assert theirs[0] not in await _claim_as(db, "host:3:new")


async def test_a_silent_replicas_claims_are_freed_after_the_timeout(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    start = utcnow()
    await store_replicas.register_replica(db, "dead", "replica-a", now=start)
    await store_replicas.register_replica(db, "alive", "replica-b", now=start)
    claimed = await _runs_claimed_by(db, "dead", 3)

    soon = start + timedelta(seconds=9)
    await store_replicas.heartbeat(db, "alive", "replica-b", now=soon)
    assert await store_replicas.free_dead_replicas(db, "alive", 10, now=soon) == \
        store_replicas.FreedClaims()
    later = start + timedelta(seconds=11)
    await store_replicas.heartbeat(db, "alive", "replica-b", now=later)
    freed = await store_replicas.free_dead_replicas(db, "alive", 10, now=later)

    assert (freed.owners, freed.runs) == (["dead"], 3)
    assert await _claim_as(db, "alive", later + timedelta(seconds=0.01)) == \
        dict.fromkeys(claimed, 1)
    # The one taken for dead comes back: told so, and counted live again.
    assert await store_replicas.heartbeat(db, "dead", "replica-a", now=later) is False
    assert await store_replicas.heartbeat(db, "dead", "replica-a", now=later) is True


async def test_a_replica_never_frees_its_own_claims_as_dead(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    start = utcnow()
    await store_replicas.register_replica(db, "me", "replica-a", now=start)
    await _runs_claimed_by(db, "me", 1)
    freed = await store_replicas.free_dead_replicas(db, "me", 1,
                                                    now=start + timedelta(seconds=30))
    assert freed.runs == 0
    assert await _claim_as(db, "someone") == {}


async def test_a_clean_stop_frees_what_is_still_claimed(db: Database) -> None:
    await _setup(db)
    await _deploy(db, "d")
    await heartbeat.take_back(db, "me", "replica-a")
    claimed = await _runs_claimed_by(db, "me", 2)
    assert await heartbeat.retire(db, "me") == 2
    assert await _claim_as(db, "next") == dict.fromkeys(claimed, 1)


async def test_the_cancel_of_a_run_a_dead_replica_held_is_carried_out(db: Database) -> None:
    """Cancelled while its claimer died mid-submit: freed, it is claimed again (same
    attempt) so the job the submit may have made is found and cancelled."""
    await _setup(db)
    await _deploy(db, "d")
    await store_replicas.register_replica(db, "old", "replica-a")
    (run_id,) = await _runs_claimed_by(db, "old", 1)
    await store.cancel_run(db, run_id)
    await store_replicas.register_replica(db, "new", "replica-a")
    assert await _claim_as(db, "new") == {run_id: 1}


def test_the_replica_id_is_kept_in_the_home_and_never_shared(tmp_path: Path) -> None:
    first = replica_identity(tmp_path, None)
    beside = replica_identity(tmp_path, None)  # a second server on the same home
    assert first.replica_id != beside.replica_id
    first.release()
    again = replica_identity(tmp_path, None)  # the first one restarted
    assert again.replica_id == first.replica_id
    assert replica_identity(tmp_path, "given").replica_id == "given"
    for identity in (beside, again):
        identity.release()


def test_a_home_that_cannot_be_written_gets_a_fresh_id(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    one, two = replica_identity(blocked, None), replica_identity(blocked, None)
    assert one.replica_id != two.replica_id and one.lock_fd is None
