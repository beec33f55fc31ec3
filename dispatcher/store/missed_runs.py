"""Missed-run policies of a deployment, applied at claim time (Argo's startingDeadlineSeconds
and concurrencyPolicy are the model).

Runs pile up when the dispatcher was down or their pool was paused. Just before claiming,
inside the claim transaction, the due runs of deployments with a policy other than the
default (``catchup: all``, ``overlap: allow``) are looked at, in their claimable pools and
queues only (a paused pool's runs wait until it resumes):

- ``catchup`` (auto-scheduled runs that are late, i.e. past their time by more than the
  pool's late threshold): ``all`` runs every missed slot; ``latest`` runs only the newest
  due slot and ends the older late ones CANCELLED "skipped: catchup=latest"; ``none`` ends
  every late one CANCELLED "skipped: catchup=none".
- ``overlap`` (any due run, manual ones too, while another run of the deployment is active:
  PENDING, RUNNING or CANCELLING): ``allow`` runs it; ``skip`` ends it CANCELLED "skipped:
  previous run still active"; ``cancel-previous`` moves the active runs to CANCELLING (the
  watcher stops them) and the newest due run goes ahead. Several due runs of one deployment
  settle in one pass as if claimed one by one: with ``skip`` the earliest goes ahead and the
  rest are skipped; with ``cancel-previous`` only the newest goes ahead.

The run that goes ahead still waits for its concurrency limits as usual (with a deployment
limit of 1 and ``cancel-previous``, it starts once the cancelled run has stopped).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, literal_column, or_, select
from sqlalchemy.engine import Connection

from dispatcher.models import ACTIVE_STATES, RunState
from dispatcher.store.runs import StateChange, transition_many
from dispatcher.store.tables import deployments, runs, work_pools, work_queues

SKIPPED_ACTIVE = "skipped: previous run still active"
SKIPPED_REPLACED = "skipped: a newer run of the deployment replaces it (overlap=cancel-previous)"
CANCELLING_REPLACED = "cancelling: a newer run of the deployment replaces it (overlap=" \
                      "cancel-previous)"
_UNPAUSED = and_(work_pools.c.paused.is_(False), work_queues.c.paused.is_(False))
# The predicates of the partial indexes tables.DEPLOYMENT_POLICY and tables.RUN_SCHEDULED,
# with literals so that both SQLite and PostgreSQL use them: a claim reads the deployments
# that have a policy, and their due runs, not every deployment.
HAS_POLICY = or_(deployments.c.catchup != literal_column("'all'"),
                  deployments.c.overlap != literal_column("'allow'"))
_IS_SCHEDULED = runs.c.state == literal_column(f"'{RunState.SCHEDULED.value}'")


@dataclass
class PolicyOutcome:
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why (ended CANCELLED)
    cancelling: list[str] = field(default_factory=list)  # active runs asked to stop


@functools.cache
def _due_runs_with_policy() -> Any:
    """Due runs of the deployments that have a policy, with it, in claimable pools and
    queues: joined rather than listed (a store may hold thousands of such deployments)."""
    return (select(runs.c.id, runs.c.deployment_id, runs.c.scheduled_time,
                   runs.c.auto_scheduled, work_pools.c.late_after_seconds,
                   deployments.c.catchup, deployments.c.overlap)
            .join(deployments, deployments.c.id == runs.c.deployment_id)
            .join(work_queues, work_queues.c.id == runs.c.queue_id)
            .join(work_pools, work_pools.c.id == runs.c.pool_id)
            .where(HAS_POLICY, _IS_SCHEDULED, runs.c.scheduled_time <= bindparam("now"),
                   _UNPAUSED)
            .order_by(runs.c.scheduled_time, runs.c.id))


@functools.cache
def _active_runs_of() -> Any:
    """The active runs of the deployments listed (those with due runs to weigh)."""
    return select(runs.c.id, runs.c.deployment_id, runs.c.state).where(
        runs.c.deployment_id.in_(bindparam("deployment_ids", expanding=True)),
        runs.c.state.in_([s.value for s in ACTIVE_STATES]))


def apply_missed_run_policies(conn: Connection, now: datetime) -> PolicyOutcome:
    outcome = PolicyOutcome()
    policies: dict[str, tuple[str, str]] = {}
    due: dict[str, list[Any]] = defaultdict(list)
    for row in conn.execute(_due_runs_with_policy(), {"now": now}):
        policies[row.deployment_id] = (row.catchup, row.overlap)
        due[row.deployment_id].append(row)
    if not due:
        return outcome
    for deployment_id, rows in due.items():
        catchup = policies[deployment_id][0]
        if catchup != "all":
            for row in _missed(rows, catchup, now):
                outcome.skipped[row.id] = f"skipped: catchup={catchup}"
            due[deployment_id] = [r for r in rows if r.id not in outcome.skipped]
    _apply_overlap(conn, policies, due, outcome)
    changes = [StateChange(run_id, RunState.CANCELLED, why)
               for run_id, why in outcome.skipped.items()]
    changes += [StateChange(run_id, RunState.CANCELLING, CANCELLING_REPLACED)
                for run_id in outcome.cancelling]
    if changes:
        moved = set(transition_many(conn, changes))
        outcome.skipped = {k: v for k, v in outcome.skipped.items() if k in moved}
        outcome.cancelling = [r for r in outcome.cancelling if r in moved]
    return outcome


def _missed(rows: list[Any], catchup: str, now: datetime) -> list[Any]:
    """The late auto-scheduled runs to skip (rows in scheduled order)."""
    auto = [r for r in rows if r.auto_scheduled]
    late = [r for r in auto
            if now - r.scheduled_time > timedelta(seconds=r.late_after_seconds)]
    if catchup == "none":
        return late
    newest = auto[-1] if auto else None
    return [r for r in late if r is not newest]


def _apply_overlap(conn: Connection, policies: dict[str, tuple[str, str]],
                   due: dict[str, list[Any]], outcome: PolicyOutcome) -> None:
    checked = [d for d, rows in due.items() if rows and policies[d][1] != "allow"]
    if not checked:
        return
    active: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in conn.execute(_active_runs_of(), {"deployment_ids": checked}):
        active[row.deployment_id].append((row.id, row.state))
    for deployment_id in checked:
        rows = due[deployment_id]
        if policies[deployment_id][1] == "skip":
            skipped = rows if active[deployment_id] else rows[1:]
            outcome.skipped.update({r.id: SKIPPED_ACTIVE for r in skipped})
        else:  # cancel-previous
            outcome.skipped.update({r.id: SKIPPED_REPLACED for r in rows[:-1]})
            outcome.cancelling += [run_id for run_id, state in active[deployment_id]
                                   if state != RunState.CANCELLING.value]
