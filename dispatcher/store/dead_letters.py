"""Runs the dispatcher could not hand to their provider: parking, dead letters, resubmission.

A submit that keeps failing leaves a trail in ``runs.submit_errors`` (one entry per failed
attempt: when, what the provider said, whether it was a circuit-breaker probe). The run
then either:

- is *parked*: still PENDING with the same attempt number, no lease owner and an expired
  lease, so any dispatcher takes it up again as soon as its pool is claimable (a circuit
  breaker opened, or the dispatcher stopped after its submit began). Keeping the attempt
  keeps the job name, so an idempotent provider finds what an unanswered call made;
- or ends FAILED as a *dead letter* (``dead_letter`` true, every error kept): refused by
  the provider, out of attempts, or past its deployment's submit deadline.

A dead letter (any final run, in fact) is resubmitted as a NEW run with the same
parameters and job variables, linked by ``resubmitted_from``; resubmitting the same run
twice answers the run made the first time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from dispatcher.errors import Conflict
from dispatcher.models import (
    DEFAULT_SUBMIT_DEADLINE_SECONDS,
    FINAL_STATES,
    Run,
    RunCreate,
    RunState,
)
from dispatcher.store.common import utcnow
from dispatcher.store.db import Database
from dispatcher.store.runs import (
    RunPreparer,
    StateChange,
    create_run,
    read_run,
    transition_many,
)
from dispatcher.store.tables import as_utc, deployments, run_states, runs

MAX_ERROR_CHARS = 500  # of one provider message in the run's state message
PENDING = RunState.PENDING.value

SubmitErrors = list[dict[str, Any]]


def submit_error(error: str, at: datetime, *, probe: bool = False) -> dict[str, Any]:
    """One failed attempt as stored in ``runs.submit_errors``."""
    return {"at": at.isoformat(), "error": error[:MAX_ERROR_CHARS * 4], "probe": probe}


def first_attempt_at(errors: Sequence[dict[str, Any]]) -> datetime | None:
    """When the run's first failed submit attempt was made (its deadline counts from it)."""
    if not errors:
        return None
    return as_utc(errors[0]["at"])


def counted_attempts(errors: Sequence[dict[str, Any]]) -> int:
    """Failed attempts that count against submit_max_attempts (probes do not)."""
    return sum(1 for e in errors if not e.get("probe"))


def dead_letter_message(reason: str, errors: Sequence[dict[str, Any]]) -> str:
    """``reason: #1: error; #2: error`` with each error cut to a readable length."""
    if not errors:
        return reason
    listed = "; ".join(f"#{i + 1}: {_short(e['error'])}" for i, e in enumerate(errors))
    return f"{reason}: {listed}"


def _short(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS - 1] + "…"


async def dead_letter_runs(db: Database, items: list[tuple[str, str, SubmitErrors]]) -> list[str]:
    """End runs FAILED as dead letters: (run id, state message, every attempt's error).
    Returns the ids that moved (a run cancelled meanwhile stays as it is)."""
    if not items:
        return []
    return await db.run(lambda conn: transition_many(conn, [
        StateChange(run_id, RunState.FAILED, message,
                    {"dead_letter": True, "submit_errors": errors or None})
        for run_id, message, errors in items]), write=True)


async def park_runs(db: Database, owner: str, items: list[tuple[str, SubmitErrors]],
                    reason: str) -> list[str]:
    """Hand claimed runs back without changing their attempt (see the module docstring)."""
    if not items:
        return []
    now = utcnow()

    def park(conn: Connection) -> list[str]:
        parked: list[str] = []
        for run_id, errors in items:
            moved = conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.lease_owner == owner,
                                   runs.c.state == PENDING, runs.c.infra_id.is_(None))
                .values(lease_owner=None, lease_expires=now, state_message=reason,
                        submit_errors=errors or None, updated=now)).rowcount
            if moved:
                parked.append(run_id)
        if parked:
            conn.execute(insert(run_states), [
                {"run_id": r, "state": PENDING, "timestamp": now, "message": reason}
                for r in parked])
        return parked

    return await db.run(park, write=True)


def expire_parked_runs(conn: Connection, pool_id: str, now: datetime) -> list[str]:
    """Parked runs of a pool that are past their deployment's submit deadline: dead letters.
    Runs inside the claim transaction, so runs waiting behind an open breaker still end
    when their deadline says so, not when the provider comes back."""
    rows = conn.execute(
        select(runs.c.id, runs.c.submit_errors, deployments.c.submit_deadline_seconds)
        .outerjoin(deployments, deployments.c.id == runs.c.deployment_id)
        .where(runs.c.pool_id == pool_id, runs.c.state == PENDING, runs.c.infra_id.is_(None),
               runs.c.lease_owner.is_(None), runs.c.submit_errors.is_not(None)))
    changes = []
    for row in rows:
        deadline = row.submit_deadline_seconds or DEFAULT_SUBMIT_DEADLINE_SECONDS
        started = first_attempt_at(row.submit_errors)
        if started is not None and started + timedelta(seconds=deadline) <= now:
            reason = (f"not submitted within its submit deadline of {deadline:g}s "
                      f"({len(row.submit_errors)} attempt(s))")
            changes.append(StateChange(row.id, RunState.FAILED,
                                       dead_letter_message(reason, row.submit_errors),
                                       {"dead_letter": True}))
    return transition_many(conn, changes) if changes else []


async def resubmit_run(db: Database, run_id: str, *,
                       prepare: RunPreparer) -> tuple[Run, bool]:
    """A new run of the same deployment with the original's parameters and job variables,
    due now and linked to it. The second call for the same run answers the first's run
    (False: not newly made)."""
    original = await db.run(lambda conn: read_run(conn, run_id))
    if original.state not in FINAL_STATES:
        raise Conflict(f"run {run_id} is {original.state.value}; only a finished run can be "
                       f"resubmitted (cancel it first with `pushpool run cancel {run_id}`)")
    if original.deployment_id is None:
        raise Conflict(f"run {run_id} has no deployment any more (it was deleted); "
                       "deploy it again and start a new run")
    return await create_run(
        db, original.deployment_id,
        RunCreate(parameters=original.parameters, job_variables=original.job_variables),
        prepare=prepare, idempotency_key=f"resubmit:{original.id}",
        resubmitted_from=original.id)

