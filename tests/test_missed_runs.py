"""Missed-run policies at claim time: catchup (all | latest | none) for late auto-scheduled
runs and overlap (allow | skip | cancel-previous) for runs due while another is active;
their pushpool.yaml mapping; and cancel-previous through the real engine."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from dispatcher import operations, store
from dispatcher.cli.deploy import parse_deployments
from dispatcher.cli.output import CliError
from dispatcher.engine.engine import Engine
from dispatcher.engine.scheduler import run_rows
from dispatcher.models import (
    DeploymentApply,
    RunCreate,
    RunState,
    ScheduleSpec,
    WorkPoolCreate,
    WorkPoolUpdate,
)
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.store.common import utcnow
from providers import registry
from tests.conftest import wait_for
from tests.fakes.recording_provider import STATE
from tests.fakes.scheduled_runs import active_schedules, insert_scheduled_runs

registry.register_provider("recording", "tests.fakes.recording_provider")


async def _deploy(db: Database, *, catchup: str = "all", overlap: str = "allow",
                  limit: int | None = None, pool: str = "p") -> None:
    await operations.deployments.apply_deployment(db, DeploymentApply.model_validate(dict(
        name="d", flow_name="f", pool_name=pool, command=["true"], catchup=catchup,
        overlap=overlap, concurrency_limit=limit, schedules=[ScheduleSpec(interval=3600)])))


@pytest.fixture
async def db_pool(db: Database) -> Database:
    await operations.pools.create_pool(db, WorkPoolCreate(name="p", type="process",
                                               late_after_seconds=15))
    return db


async def _slots(db: Database, *seconds_ago: float) -> list[str]:
    """Auto-scheduled runs (as the scheduler makes them) for slots this long ago."""
    (target,) = await active_schedules(db)
    now = utcnow()
    slots = [now - timedelta(seconds=s) for s in seconds_ago]
    rows = run_rows(target, slots, now)
    assert await insert_scheduled_runs(db, rows) == len(rows)
    by_time = {row["scheduled_time"]: row["id"] for row in rows}
    return [by_time[slot] for slot in slots]


async def _manual(db: Database, seconds_ago: float) -> str:
    run, _ = await operations.runs.create_run(db, "f/d", RunCreate(
        scheduled_time=utcnow() - timedelta(seconds=seconds_ago)))
    return run.id


async def _claim(db: Database, owner: str = "me", now: datetime | None = None
                 ) -> tuple[list[str], dict[str, str], list[str]]:
    claim = await store.claim_runs(db, owner, limit=50, lease_seconds=60, now=now)
    return [r.run_id for r in claim.runs], claim.skipped, claim.cancelling


async def _state(db: Database, run_id: str) -> tuple[RunState, str | None]:
    run = await store.get_run(db, run_id)
    return run.state, run.state_message


# ---------------------------------------------------------------------------- catchup


async def test_catchup_latest_runs_only_the_newest_missed_slot(db_pool: Database) -> None:
    await _deploy(db_pool, catchup="latest")
    oldest, older, newest = await _slots(db_pool, 300, 200, 100)
    manual = await _manual(db_pool, 250)  # catchup is about schedules: manual runs go
    claimed, skipped, _ = await _claim(db_pool)
    assert sorted(claimed) == sorted([manual, newest])
    assert skipped == {oldest: "skipped: catchup=latest", older: "skipped: catchup=latest"}
    for run_id in (oldest, older):
        assert await _state(db_pool, run_id) == (RunState.CANCELLED, "skipped: catchup=latest")


async def test_catchup_none_skips_every_late_slot_but_not_a_punctual_one(
        db_pool: Database) -> None:
    await _deploy(db_pool, catchup="none")
    late = await _slots(db_pool, 300, 100, 16)
    (punctual,) = await _slots(db_pool, 2)  # due, within the pool's 15 s late threshold
    claimed, skipped, _ = await _claim(db_pool)
    assert claimed == [punctual]
    assert skipped == dict.fromkeys(late, "skipped: catchup=none")


async def test_catchup_all_runs_every_missed_slot(db_pool: Database) -> None:
    await _deploy(db_pool, catchup="all")
    missed = await _slots(db_pool, 300, 200, 100)
    claimed, skipped, _ = await _claim(db_pool)
    assert claimed == missed and skipped == {}


async def test_a_paused_pools_missed_slots_are_judged_when_it_resumes(
        db_pool: Database) -> None:
    await _deploy(db_pool, catchup="latest")
    await store.update_pool(db_pool, "p", WorkPoolUpdate(paused=True))
    first, second = await _slots(db_pool, 300, 200)
    assert await _claim(db_pool) == ([], {}, [])
    assert (await _state(db_pool, first))[0] is RunState.SCHEDULED
    await store.update_pool(db_pool, "p", WorkPoolUpdate(paused=False))
    claimed, skipped, _ = await _claim(db_pool)
    assert claimed == [second] and list(skipped) == [first]


# ---------------------------------------------------------------------------- overlap


async def test_overlap_skip_skips_runs_while_one_is_active(db_pool: Database) -> None:
    await _deploy(db_pool, overlap="skip")
    running = await _manual(db_pool, 60)
    assert (await _claim(db_pool))[0] == [running]
    await store.set_run_state(db_pool, running, RunState.RUNNING, "running")
    due = await _manual(db_pool, 1)
    claimed, skipped, cancelling = await _claim(db_pool)
    assert (claimed, cancelling) == ([], [])
    assert skipped == {due: "skipped: previous run still active"}
    assert await _state(db_pool, due) == (RunState.CANCELLED,
                                          "skipped: previous run still active")
    # Nothing active: of several due runs the earliest goes, the rest would overlap it.
    await store.set_run_state(db_pool, running, RunState.COMPLETED, "done")
    first, later = await _manual(db_pool, 30), await _manual(db_pool, 20)
    claimed, skipped, _ = await _claim(db_pool)
    assert claimed == [first] and list(skipped) == [later]


async def test_overlap_cancel_previous_stops_the_active_run_for_the_newest(
        db_pool: Database) -> None:
    await _deploy(db_pool, overlap="cancel-previous", limit=1)
    previous = await _manual(db_pool, 60)
    assert (await _claim(db_pool))[0] == [previous]
    await store.set_run_state(db_pool, previous, RunState.RUNNING, "running")
    stale, newest = await _manual(db_pool, 20), await _manual(db_pool, 10)
    claimed, skipped, cancelling = await _claim(db_pool)
    # The deployment's limit of 1 holds: the newest waits for the previous run to stop.
    assert claimed == [] and cancelling == [previous]
    assert skipped == {stale: "skipped: a newer run of the deployment replaces it "
                              "(overlap=cancel-previous)"}
    state, message = await _state(db_pool, previous)
    assert state is RunState.CANCELLING and "replaces it" in (message or "")
    assert (await _claim(db_pool)) == ([], {}, [])  # asked once; still stopping
    await store.set_run_state(db_pool, previous, RunState.CANCELLED, "cancelled")
    assert (await _claim(db_pool))[0] == [newest]


async def test_overlap_allow_runs_them_side_by_side(db_pool: Database) -> None:
    await _deploy(db_pool, overlap="allow")
    first = await _manual(db_pool, 60)
    assert (await _claim(db_pool))[0] == [first]
    second = await _manual(db_pool, 1)
    assert await _claim(db_pool) == ([second], {}, [])


async def test_policies_leave_other_deployments_alone(db_pool: Database) -> None:
    await _deploy(db_pool, catchup="none", overlap="skip")
    await operations.deployments.apply_deployment(db_pool, DeploymentApply(
        name="other", flow_name="f", pool_name="p", command=["true"],
        schedules=[ScheduleSpec(interval=3600)]))
    other, _ = await operations.runs.create_run(db_pool, "f/other", RunCreate(
        scheduled_time=utcnow() - timedelta(seconds=300)))
    (mine,) = [t for t in await active_schedules(db_pool) if t.deployment_name == "d"]
    rows = run_rows(mine, [utcnow() - timedelta(seconds=300)], utcnow())
    await insert_scheduled_runs(db_pool, rows)
    claimed, skipped, _ = await _claim(db_pool)
    assert claimed == [other.id] and list(skipped) == [rows[0]["id"]]


# ---------------------------------------------------------------------------- engine


async def test_cancel_previous_through_the_engine(db: Database) -> None:
    STATE.reset()
    await operations.pools.create_pool(db, WorkPoolCreate(name="rec", type="recording"))
    await _deploy(db, overlap="cancel-previous", pool="rec")
    engine = Engine(db, Settings(lease_seconds=30, watch_interval_seconds=0.05,
                                 scheduler_interval_seconds=3600, cancel_grace_seconds=0.5))
    await engine.start()
    try:
        first, _ = await operations.runs.create_run(db, "f/d", RunCreate())
        engine.wake()
        await wait_for(lambda: _is(db, first.id, RunState.RUNNING), what="first running")
        second, _ = await operations.runs.create_run(db, "f/d", RunCreate())
        engine.wake()
        await wait_for(lambda: _is(db, first.id, RunState.CANCELLED), what="first cancelled")
        await wait_for(lambda: _is(db, second.id, RunState.RUNNING), what="second running")
        assert STATE.cancels == [f"rec-{first.id}"]
        assert STATE.submits[second.id] == 1
    finally:
        await engine.stop()
        STATE.reset()


async def _is(db: Database, run_id: str, state: RunState) -> bool:
    return (await store.get_run(db, run_id)).state is state


# ---------------------------------------------------------------------------- pushpool.yaml


def test_yaml_maps_the_policies_and_the_deadline() -> None:
    (planned,) = parse_deployments(
        "deployments:\n"
        "  - name: nightly\n"
        "    flow_name: etl\n"
        "    command: [etl]\n"
        "    work_pool: {name: local}\n"
        "    catchup: latest\n"
        "    overlap: cancel-previous\n"
        "    submit_deadline_seconds: 600\n")
    body: dict[str, Any] = planned.body
    assert (body["catchup"], body["overlap"], body["submit_deadline_seconds"]) == (
        "latest", "cancel-previous", 600)
    applied = DeploymentApply.model_validate(body)
    assert (applied.catchup, applied.overlap) == ("latest", "cancel-previous")


@pytest.mark.parametrize(("line", "expected"), [
    ("    catchup: sometimes\n", "pushpool.yaml:6: deployment 'nightly': catchup: Input "
                                 "should be 'all', 'latest' or 'none'"),
    ("    overlap: queue\n", "pushpool.yaml:6: deployment 'nightly': overlap: Input should "
                             "be 'allow', 'skip' or 'cancel-previous'"),
    ("    submit_deadline_seconds: 0\n", "pushpool.yaml:6: deployment 'nightly': "
                                         "submit_deadline_seconds: Input should be greater "
                                         "than 0"),
])
def test_yaml_policy_errors_name_the_line(line: str, expected: str) -> None:
    text = ("deployments:\n  - name: nightly\n    flow_name: etl\n    command: [etl]\n"
            "    work_pool: {name: local}\n" + line)
    with pytest.raises(CliError) as raised:
        parse_deployments(text)
    assert raised.value.message.startswith(expected), raised.value.message
