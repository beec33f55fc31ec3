"""The engine's queries: claim due runs under every limit, record submissions, leases,
the watch list and the next wake-up time (scheduled runs: store/scheduled_runs.py).

Claiming is one transaction: due runs in unpaused pools and queues, lowest queue priority
number first, then scheduled time, within the pool, queue and deployment concurrency
limits, marked PENDING with a lease. On PostgreSQL the candidates are taken ``FOR UPDATE
SKIP LOCKED`` and claimers serialise on an advisory lock, so limits hold across replicas.
Two steps come first in the same transaction: the deployments' missed-run policies
(store/missed_runs.py) and the circuit breaker's half-open probes (store/pool_breaker.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.engine import Connection

from dispatcher.models import (
    ACTIVE_STATES,
    DEFAULT_SUBMIT_DEADLINE_SECONDS,
    RunState,
)
from dispatcher.store.common import utcnow
from dispatcher.store.db import CLAIM_LOCK_ID, Database
from dispatcher.store.missed_runs import HAS_POLICY, PolicyOutcome, apply_missed_run_policies
from dispatcher.store.pool_breaker import BY_BREAKER, Probes, take_probes
from dispatcher.store.runs import StateChange, transition_many
from dispatcher.store.tables import (
    as_utc,
    deployments,
    run_states,
    runs,
    work_pools,
    work_queues,
)

ACTIVE = [s.value for s in ACTIVE_STATES]
SCHEDULED = RunState.SCHEDULED.value
PENDING = RunState.PENDING.value
CANCELLING = RunState.CANCELLING.value


@dataclass(frozen=True)
class ClaimedRun:
    """Everything the dispatcher needs to build one JobSpec, read in the claim."""

    run_id: str
    name: str
    attempt: int
    scheduled_time: datetime
    pool_name: str
    pool_type: str
    base_job_template: dict[str, Any]
    queue_name: str
    deployment_id: str | None
    deployment_name: str | None
    flow_name: str | None
    command: list[str] | None
    entrypoint: str | None
    source: str | None
    image: str | None
    deployment_job_variables: dict[str, Any]
    run_job_variables: dict[str, Any]
    parameters: dict[str, Any]
    created: datetime | None = None
    # Taken up again while PENDING: after another claimer's lease expired
    # (``lease_expired``), or parked (a breaker opened, a dispatcher stopped mid-submit).
    reclaimed: bool = False
    lease_expired: bool = False
    probe: bool = False  # the circuit breaker's half-open probe of its (paused) pool
    submit_deadline_seconds: float = DEFAULT_SUBMIT_DEADLINE_SECONDS
    submit_errors: tuple[dict[str, Any], ...] = ()  # failed attempts of earlier claims


@dataclass
class Claim:
    """What one claim transaction did: the runs to submit, and what the policies ended."""

    runs: list[ClaimedRun] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> reason (CANCELLED)
    cancelling: list[str] = field(default_factory=list)  # active runs cancel-previous stops
    dead_lettered: list[str] = field(default_factory=list)  # parked past their deadline


@dataclass
class _Limits:
    """Free concurrency slots of every pool, queue and deployment that has a limit."""

    blocked_pools: set[str]
    free_pools: dict[str, int]
    blocked_queues: set[str]
    free_queues: dict[str, int]
    blocked_deployments: set[str]
    free_deployments: dict[str, int]

    def any(self) -> bool:
        return bool(self.free_pools or self.free_queues or self.free_deployments)

    def take(self, rows: list[Any], limit: int) -> list[Any]:
        """The rows that fit, in order, spending slots as they go."""
        chosen: list[Any] = []
        for row in rows[:limit]:
            if row.state != SCHEDULED:  # taken up again: it already holds its slots
                chosen.append(row)
                continue
            slots = [(self.free_pools, row.pool_id), (self.free_queues, row.queue_id),
                     (self.free_deployments, row.deployment_id)]
            if any(key in free and free[key] <= 0 for free, key in slots):
                continue
            for free, key in slots:
                if key in free:
                    free[key] -= 1
            chosen.append(row)
        return chosen


def _limited(table: Table, fk: ColumnElement[Any]) -> Any:
    """(kind, id, limit, active runs) of each row of ``table`` that has a limit; the count
    is an index range per row (runs by pool/queue/deployment and state)."""
    active = (select(func.count()).select_from(runs)
              .where(fk == table.c.id, runs.c.state.in_(ACTIVE)).scalar_subquery())
    return select(literal_column(f"'{table.name}'").label("kind"), table.c.id,
                  table.c.concurrency_limit, active.label("active")).where(
        table.c.concurrency_limit.is_not(None))  # tables.DEPLOYMENT_LIMITED: a partial index


def _current_limits(conn: Connection) -> _Limits:
    """Every limit in one statement, reading only the pools, queues and deployments that
    have one (not every deployment of a large store)."""
    free: dict[str, dict[str, int]] = {t.name: {} for t in (work_pools, work_queues,
                                                             deployments)}
    for row in conn.execute(union_all(_limited(work_pools, runs.c.pool_id),
                                      _limited(work_queues, runs.c.queue_id),
                                      _limited(deployments, runs.c.deployment_id))):
        free[row.kind][row.id] = row.concurrency_limit - row.active

    def blocked(kind: str) -> set[str]:
        return {k for k, n in free[kind].items() if n <= 0}

    return _Limits(blocked(work_pools.name), free[work_pools.name],
                   blocked(work_queues.name), free[work_queues.name],
                   blocked(deployments.name), free[deployments.name])


def _within(rank: Any, key: Any, free: dict[str, int], default: int) -> Any:
    """rank <= the free slots of the run's pool/queue/deployment (true where no limit)."""
    if not free:
        return true()
    return rank <= case({k: max(n, 0) for k, n in free.items()}, value=key, else_=default)


_DUE_ORDER = (work_queues.c.priority, runs.c.scheduled_time, runs.c.id)
_UNPAUSED = and_(work_pools.c.paused.is_(False), work_queues.c.paused.is_(False))
# The predicates of the partial indexes tables.RUN_SCHEDULED and tables.RUN_UNSUBMITTED,
# with literals so that both SQLite and PostgreSQL (in generic plans too) use them.
_IS_SCHEDULED = runs.c.state == literal_column(f"'{SCHEDULED}'")
_UNSUBMITTED = and_(runs.c.state == literal_column(f"'{PENDING}'"), runs.c.infra_id.is_(None))


def _claimable(*where: Any) -> Any:
    """Run ids in unpaused pools and queues, with the queue at hand for its priority."""
    return (select(runs.c.id).join(work_queues, work_queues.c.id == runs.c.queue_id)
            .join(work_pools, work_pools.c.id == runs.c.pool_id).where(*where, _UNPAUSED))


def _first_in_unpaused_queues(column: Any, where: Any) -> Any:
    """The least ``column`` of the runs matching ``where`` (the predicate of a partial
    index keyed (queue_id, column)) over the unpaused queues: one index seek per queue, so
    it costs the same however many runs are scheduled ahead, held by dispatchers, or
    piled up in a paused pool; the planners' row estimates cannot mislead it."""
    first_in_queue = (select(column).where(runs.c.queue_id == work_queues.c.id, where)
                      .order_by(column).limit(1).scalar_subquery())
    per_queue = (select(first_in_queue.label("first"))
                 .join_from(work_queues, work_pools, work_pools.c.id == work_queues.c.pool_id)
                 .where(_UNPAUSED).subquery())
    return select(func.min(per_queue.c.first)).scalar_subquery()


def _first_due_time() -> Any:
    """The earliest SCHEDULED time (tables.RUN_SCHEDULED)."""
    return _first_in_unpaused_queues(runs.c.scheduled_time, _IS_SCHEDULED)


def _first_unsubmitted_lease_expiry() -> Any:
    """When the first lease of a claimed-but-unsubmitted run ends (tables.RUN_UNSUBMITTED):
    queue by queue, not a join over every run held (7-12 ms a claim with 3,000 held)."""
    return _first_in_unpaused_queues(runs.c.lease_expires, _UNSUBMITTED)


@dataclass(frozen=True)
class _Gates:
    """What a claim has to look at, read in one statement: each later read is skipped
    when its gate says it would find nothing (each is a round trip on PostgreSQL)."""

    anything_due: bool
    leases_expired: bool
    probes_due: bool
    policies: bool
    limits: bool


def _exists(*where: Any, table: Any) -> Any:
    return select(literal(1)).select_from(table).where(*where).exists()


def _first_cancelled_lease_expiry() -> Any:
    """When the first lease of a run cancelled before its submit was recorded ends, in
    claimable pools and queues (such runs are few: a join over them is cheap)."""
    return (select(func.min(runs.c.lease_expires))
            .join(work_queues, work_queues.c.id == runs.c.queue_id)
            .join(work_pools, work_pools.c.id == runs.c.pool_id)
            .where(_CANCELLED_UNRECORDED, _UNPAUSED).scalar_subquery())


@functools.cache
def _gates_query(postgresql: bool) -> Any:
    per_call_plans = ([func.set_config("plan_cache_mode", "force_custom_plan", True)
                       .label("plans")] if postgresql else [])
    return select(*per_call_plans,
        _first_due_time().label("first_due"),
        _first_unsubmitted_lease_expiry().label("lease"),
        _first_cancelled_lease_expiry().label("cancel_lease"),
        _exists(BY_BREAKER, or_(work_pools.c.breaker_retry_at.is_(None),
                                 work_pools.c.breaker_retry_at <= bindparam("now")),
                table=work_pools).label("probes"),
        _exists(HAS_POLICY, table=deployments).label("policies"),
        or_(_exists(work_pools.c.concurrency_limit.is_not(None), table=work_pools),
            _exists(work_queues.c.concurrency_limit.is_not(None), table=work_queues),
            _exists(deployments.c.concurrency_limit.is_not(None), table=deployments)
            ).label("limits"))


def _gates(conn: Connection, now: datetime, due_by: datetime) -> _Gates:
    row = conn.execute(_gates_query(conn.dialect.name == "postgresql"), {"now": now}).one()
    leases = [as_utc(t) for t in (row.lease, row.cancel_lease) if t is not None]
    return _Gates(anything_due=row.first_due is not None and as_utc(row.first_due) <= due_by,
                  leases_expired=any(t < now for t in leases), probes_due=bool(row.probes),
                  policies=bool(row.policies), limits=bool(row.limits))


def _due_in_queues(conn: Connection, due_by: datetime, limit: int
                   ) -> tuple[Any, dict[str, Any]]:
    """The ids of the first ``limit`` due runs in claim order (a query, which the claim
    reads its candidates through: one round trip fewer), read queue by queue: each queue's
    first ``limit`` by time is an ordered walk of the partial index that stops there,
    whatever the planner estimates (PostgreSQL misjudges `scheduled_time <= now`, with
    the past runs' times in its statistics, and may scan the table)."""
    queues = conn.execute(_unpaused_queues_query()).all()
    if not queues:
        return None, {}
    params: dict[str, Any] = {"due_by": due_by}
    for i, (queue_id, priority) in enumerate(queues):
        params[f"queue_{i}"], params[f"priority_{i}"] = queue_id, priority
    return _due_union(len(queues), limit), params


@functools.cache
def _unpaused_queues_query() -> Any:
    return (select(work_queues.c.id, work_queues.c.priority)
            .join(work_pools, work_pools.c.id == work_queues.c.pool_id).where(_UNPAUSED))


@functools.lru_cache(maxsize=256)
def _due_union(queues: int, limit: int) -> Any:
    """The query of ``_due_in_queues`` for that many queues, with the queues, priorities
    and time as parameters: built once (building ten subqueries per claim cost more than
    running them)."""
    parts = []
    for i in range(queues):
        first = (select(runs.c.id, runs.c.scheduled_time)
                 .where(runs.c.queue_id == bindparam(f"queue_{i}"), _IS_SCHEDULED,
                        runs.c.scheduled_time <= bindparam("due_by"))
                 .order_by(runs.c.scheduled_time, runs.c.id).limit(limit).subquery())
        # SQLite takes no ORDER BY/LIMIT in a compound member: select from a subquery.
        parts.append(select(first.c.id, first.c.scheduled_time,
                            bindparam(f"priority_{i}", type_=Integer).label("priority")))
    due = union_all(*parts).subquery()
    return select(due.c.id).order_by(due.c.priority, due.c.scheduled_time,
                                     due.c.id).limit(limit)


def _due_run_ids(conn: Connection, due_by: datetime, limit: int, limits: _Limits
                 ) -> tuple[Any, dict[str, Any]]:
    """A query of the ids of due SCHEDULED runs in claim order, none beyond a limit's free
    slots (None: no unpaused queue), and the parameters it takes."""
    if not limits.any():
        return _due_in_queues(conn, due_by, limit)
    base = _claimable(_IS_SCHEDULED, runs.c.scheduled_time <= due_by)

    def rank(column: ColumnElement[Any]) -> Any:
        return func.row_number().over(partition_by=column, order_by=_DUE_ORDER)

    # Rank each due run within its pool, queue and deployment (where one of them has a
    # limit: each ranking sorts every due run), so runs beyond a limit's free slots never
    # fill the batch and starve other work (Prefect #19403).
    ranks = [(rank(column) if free else literal(1)).label(name) for column, free, name in (
        (runs.c.pool_id, limits.free_pools, "rn_pool"),
        (runs.c.queue_id, limits.free_queues, "rn_queue"),
        (runs.c.deployment_id, limits.free_deployments, "rn_dep"))]
    ranked = base.add_columns(
        runs.c.pool_id, runs.c.queue_id, runs.c.deployment_id, work_queues.c.priority,
        runs.c.scheduled_time, *ranks)
    if limits.blocked_pools:
        ranked = ranked.where(runs.c.pool_id.not_in(limits.blocked_pools))
    if limits.blocked_queues:
        ranked = ranked.where(runs.c.queue_id.not_in(limits.blocked_queues))
    if limits.blocked_deployments:
        ranked = ranked.where(or_(runs.c.deployment_id.is_(None),
                                  runs.c.deployment_id.not_in(limits.blocked_deployments)))
    sub = ranked.subquery()
    return (select(sub.c.id)
            .where(_within(sub.c.rn_pool, sub.c.pool_id, limits.free_pools, limit),
                   _within(sub.c.rn_queue, sub.c.queue_id, limits.free_queues, limit),
                   _within(sub.c.rn_dep, sub.c.deployment_id, limits.free_deployments, limit))
            .order_by(sub.c.priority, sub.c.scheduled_time, sub.c.id).limit(limit)), {}


# Cancelled while a claimer held it, and that claimer's lease ran out with nothing recorded
# (it died between the provider's answer and the record): the job may exist. Claimed again
# with its attempt, the idempotent submit finds the job, and the watcher then cancels it.
_CANCELLED_UNRECORDED = and_(runs.c.state == literal_column(f"'{CANCELLING}'"),
                             runs.c.infra_id.is_(None), runs.c.lease_owner.is_not(None))


def _expired_run_ids(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Claimed but never submitted, and the claimer's lease ran out: claimable again."""
    return list(conn.execute(
        _claimable(or_(_UNSUBMITTED, _CANCELLED_UNRECORDED), runs.c.lease_expires < now)
        .order_by(*_DUE_ORDER).limit(limit)).scalars())


async def claim_due_runs(db: Database, owner: str, *, limit: int, lease_seconds: float,
                         now: datetime | None = None) -> list[ClaimedRun]:
    """The runs claimed (see ``claim_runs`` for everything the claim did)."""
    claim = await claim_runs(db, owner, limit=limit, lease_seconds=lease_seconds, now=now)
    return claim.runs


async def claim_runs(db: Database, owner: str, *, limit: int, lease_seconds: float,
                     now: datetime | None = None, ahead_seconds: float = 0.0) -> Claim:
    """``ahead_seconds``: also claim runs due that soon, so the dispatcher can have them in
    hand and call the provider at their scheduled time rather than after a claim."""
    now = now or utcnow()
    due_by = now + timedelta(seconds=ahead_seconds)

    postgresql = db.dialect == "postgresql"

    def claim(conn: Connection) -> Claim:
        if postgresql:
            conn.execute(_CLAIM_LOCK, {"k": CLAIM_LOCK_ID})
        gates = _gates(conn, now, due_by)
        due = gates.anything_due
        # Policies only act on due runs (due by ``now``, which comes before ``due_by``).
        policies = (apply_missed_run_policies(conn, now) if due and gates.policies
                    else PolicyOutcome())
        probes = (take_probes(conn, now, hold_seconds=lease_seconds) if gates.probes_due
                  else Probes())
        result = Claim(skipped=policies.skipped, cancelling=policies.cancelling,
                       dead_lettered=probes.dead_lettered)
        expired = _expired_run_ids(conn, now, limit) if gates.leases_expired else []
        if not (due or expired or probes.run_ids):
            return result
        limits = (_current_limits(conn) if gates.limits
                  else _Limits(set(), {}, set(), {}, set(), {}))
        named = probes.run_ids + expired
        due_ids, due_params = (_due_run_ids(conn, due_by, limit, limits) if due
                               else (None, {}))
        if not named and due_ids is None:
            return result
        # The due-run query of a claim without limits is built once per queue count, so
        # is the candidate read around it; with limits it carries their slots each time.
        read = _candidates_query if limits.any() else _cached_candidates_query
        query = read(due_ids, bool(named), postgresql)
        rows = list(conn.execute(query, {**due_params, "due_by": due_by, "named": named}))
        probe_ids = set(probes.run_ids)
        chosen = limits.take([r for r in rows if r.id in probe_ids], len(probe_ids))
        chosen += limits.take([r for r in rows if r.id not in probe_ids], limit)
        if not chosen:
            return result
        _mark_claimed(conn, chosen, owner, now, now + timedelta(seconds=lease_seconds))
        result.runs = _claimed_runs(conn, chosen, probe_ids)
        return result

    return await db.run(claim, write=True)


# The claim serialises replicas on an advisory lock. Its statements are prepared, and the
# plan each gets is chosen step by step (set_config(..., true) lasts until the commit):
# - the lock sets generic plans for the gates read, which has the same shape at every
#   claim and took longer to plan than to run (2.5 of 3 ms on a store of a million runs);
# - the gates read then sets plans made at every call, for the reads whose best plan
#   depends on the values and the table's size now (limits, policies, expired leases, the
#   candidate read). Left to choose, PostgreSQL kept a generic candidate read planned on a
#   nearly empty table, a nested loop over every run: 0.5-1.6 s a claim in a burst;
# - the candidate read hands the primary-key writes after it back to PostgreSQL's choice.
_CLAIM_LOCK = text("SELECT pg_advisory_xact_lock(:k), "
                   "set_config('plan_cache_mode', 'force_generic_plan', true)")


def _candidates_query(due_ids: Any | None, named: bool, postgresql: bool) -> Any:
    """The claim's candidate rows: the runs named (parameter ``named``: leases expired,
    probes) and those ``due_ids`` selects, each still claimable, in claim order."""
    wanted: list[ColumnElement[bool]] = (
        [runs.c.id.in_(bindparam("named", expanding=True))] if named else [])
    if due_ids is not None and postgresql:
        # `id = ANY(array of the due ids)`, not `id IN (subquery)`: the ids are read once
        # and each run is then looked up by primary key, whatever the planner makes of the
        # table's size (planned on a nearly empty table, the IN form became a nested loop
        # over every run, and later a scan of every run to join the ids).
        due = due_ids.subquery()
        wanted.append(runs.c.id == any_(cast(select(func.array_agg(due.c.id))
                                             .scalar_subquery(), ARRAY(String))))
    elif due_ids is not None:
        wanted.append(runs.c.id.in_(due_ids))
    query = (
        select(runs.c.id, runs.c.name, runs.c.attempt, runs.c.state, runs.c.scheduled_time,
               runs.c.pool_id, runs.c.queue_id, runs.c.deployment_id, runs.c.job_variables,
               runs.c.parameters, runs.c.created, runs.c.lease_owner, runs.c.submit_errors,
               work_queues.c.name.label("queue_name"), *_DEPLOYMENT_FIELDS)
        .join(work_queues, work_queues.c.id == runs.c.queue_id)
        # The deployment's few small columns ride along: one round trip fewer.
        .outerjoin(deployments, deployments.c.id == runs.c.deployment_id)
        .where(or_(*wanted),
               or_(and_(runs.c.state == SCHEDULED,
                        runs.c.scheduled_time <= bindparam("due_by")),
                   and_(runs.c.state == PENDING, runs.c.infra_id.is_(None)),
                   _CANCELLED_UNRECORDED))
        .order_by(*_DUE_ORDER)
    )
    if postgresql:
        # Rows another transaction holds (a cancel, say) wait for the next claim.
        query = query.with_for_update(of=runs, skip_locked=True)
        # The writes that follow look runs up by primary key: any plan is a good plan,
        # and one kept by the connection saves planning 200 ids at every claim.
        query = query.add_columns(
            func.set_config("plan_cache_mode", "auto", True).label("plans"))
    return query


_cached_candidates_query = functools.lru_cache(maxsize=256)(_candidates_query)


@functools.cache
def _claim_writes() -> tuple[Any, Any, Any]:
    """(mark fresh runs PENDING, renew taken-up runs' leases, add history), built once."""
    ids = runs.c.id.in_(bindparam("ids", expanding=True))
    lease: dict[str, Any] = {"lease_owner": bindparam("claimer"),
                             "lease_expires": bindparam("lease_until"),
                             "updated": bindparam("claimed_at")}
    fresh = update(runs).where(ids).values(
        state=PENDING, state_message=bindparam("claim_message"),
        attempt=runs.c.attempt + 1, **lease)
    # Same attempt number: an idempotent provider finds what the last try made.
    again = update(runs).where(ids).values(**lease)
    return fresh, again, insert(run_states)


def _mark_claimed(conn: Connection, chosen: list[Any], owner: str, now: datetime,
                  expires: datetime) -> None:
    fresh = [r.id for r in chosen if r.state == SCHEDULED]
    again = [r.id for r in chosen if r.state != SCHEDULED]
    mark_fresh, mark_again, add_history = _claim_writes()
    lease = {"claimer": owner, "lease_until": expires, "claimed_at": now}
    if fresh:
        conn.execute(mark_fresh, {"ids": fresh, "claim_message": f"claimed by {owner}",
                                  **lease})
    if again:
        conn.execute(mark_again, {"ids": again, **lease})
    conn.execute(add_history, [
        {"run_id": r.id, "state": CANCELLING if r.state == CANCELLING else PENDING,
         "timestamp": now, "message": _claim_message(r, owner)} for r in chosen])


def _claim_message(row: Any, owner: str) -> str:
    if row.state == SCHEDULED:
        return f"claimed by {owner}"
    if row.state == CANCELLING:
        return (f"lease expired; reclaimed by {owner} to find the job its last submit may "
                "have made, and cancel it")
    if row.lease_owner is None:  # parked: handed back with its attempt kept
        return f"taken up again by {owner}"
    return f"lease expired; reclaimed by {owner}"


@dataclass(frozen=True)
class _Deployment:
    name: str
    flow_name: str
    command: list[str] | None
    entrypoint: str | None
    source: str | None
    image: str | None
    job_variables: dict[str, Any] | None
    submit_deadline_seconds: float | None


_DEPLOYMENT_FIELDS = [deployments.c[f].label(f"dep_{f}") for f in _Deployment.__annotations__]


def _deployment_of(row: Any) -> _Deployment | None:
    if row.deployment_id is None or row.dep_name is None:  # no deployment, or it is gone
        return None
    return _Deployment(*(getattr(row, f"dep_{f}") for f in _Deployment.__annotations__))


def _claimed_runs(conn: Connection, chosen: list[Any], probes: set[str]) -> list[ClaimedRun]:
    """Join each run with its pool, read once per pool (templates are the largest thing
    in the store), and with its deployment, read along with the run."""
    pools = {r.id: r for r in conn.execute(
        _pools_query(), {"pool_ids": sorted({r.pool_id for r in chosen})})}
    claimed = []
    for r in chosen:
        pool, dep = pools[r.pool_id], _deployment_of(r)
        claimed.append(ClaimedRun(
            run_id=r.id, name=r.name, attempt=r.attempt + (1 if r.state == SCHEDULED else 0),
            scheduled_time=r.scheduled_time, pool_name=pool.name, pool_type=pool.type,
            base_job_template=pool.base_job_template, queue_name=r.queue_name,
            deployment_id=r.deployment_id,
            deployment_name=f"{dep.flow_name}/{dep.name}" if dep else None,
            flow_name=dep.flow_name if dep else None, command=dep.command if dep else None,
            entrypoint=dep.entrypoint if dep else None, source=dep.source if dep else None,
            image=dep.image if dep else None,
            deployment_job_variables=(dep.job_variables if dep else None) or {},
            run_job_variables=r.job_variables or {}, parameters=r.parameters or {},
            created=r.created, reclaimed=r.state != SCHEDULED,
            lease_expired=r.state != SCHEDULED and r.lease_owner is not None,
            probe=r.id in probes,
            submit_deadline_seconds=(dep.submit_deadline_seconds if dep else None)
            or DEFAULT_SUBMIT_DEADLINE_SECONDS,
            submit_errors=tuple(r.submit_errors or ())))
    return claimed


@functools.cache
def _pools_query() -> Any:
    return (select(work_pools.c.id, work_pools.c.name, work_pools.c.type,
                   work_pools.c.base_job_template)
            .where(work_pools.c.id.in_(bindparam("pool_ids", expanding=True))))


@dataclass(frozen=True)
class SubmissionRecord:
    run_id: str
    infra_id: str
    console_url: str | None
    job_configuration: dict[str, Any]
    timeout_seconds: int | None
    message: str
    connection: dict[str, Any] = field(default_factory=dict)  # InfraRef.connection


async def record_submissions(db: Database, owner: str,
                             records: list[SubmissionRecord]) -> None:
    """The provider accepted these runs: keep the infra id and drop the lease."""
    if not records:
        return
    now = utcnow()
    # One record per run, the latest: a record queued through a database outage and the
    # record of the resubmission made once its lease ran out can arrive in one batch.
    latest = list({r.run_id: r for r in records}.values())

    def record(conn: Connection) -> None:
        # Only runs this claimer still holds: a record retried after an outage must not
        # add a second "submitted" to a run another replica has since taken over.
        held = select(runs.c.id, runs.c.state).where(
            runs.c.id.in_([r.run_id for r in latest]), runs.c.lease_owner == owner,
            runs.c.infra_id.is_(None))
        if conn.dialect.name == "postgresql":
            held = held.order_by(runs.c.id).with_for_update()  # id order: no deadlock
        ours: dict[str, str] = {r.id: r.state for r in conn.execute(held)}
        mine = [r for r in latest if r.run_id in ours]
        if not mine:
            return
        conn.execute(
            update(runs).where(runs.c.id == bindparam("rid"), runs.c.lease_owner == owner)
            .values(infra_id=bindparam("infra"), console_url=bindparam("url"),
                    infra_connection=bindparam("conn"),
                    job_configuration=bindparam("config"), timeout_seconds=bindparam("timeout"),
                    state_message=bindparam("msg"), lease_owner=None, lease_expires=None,
                    updated=now),
            [{"rid": r.run_id, "infra": r.infra_id, "url": r.console_url,
              "conn": r.connection or None,
              "config": r.job_configuration, "timeout": r.timeout_seconds, "msg": r.message}
             for r in mine])
        # A run cancelled meanwhile stays CANCELLING: the watcher cancels its job now.
        conn.execute(insert(run_states), [
            {"run_id": r.run_id, "state": ours[r.run_id], "timestamp": now, "message": r.message}
            for r in mine])

    await db.run(record, write=True)


async def renew_leases(db: Database, owner: str, run_ids: list[str],
                       lease_seconds: float) -> None:
    if not run_ids:
        return
    expires = utcnow() + timedelta(seconds=lease_seconds)
    await db.run(lambda conn: conn.execute(
        update(runs).where(runs.c.id.in_(run_ids), runs.c.lease_owner == owner)
        .values(lease_expires=expires)), write=True)


async def run_state(db: Database, run_id: str) -> RunState | None:
    """A run's stored state (None if it is gone): the dispatcher checks it between retries."""
    state = await db.run(lambda conn: conn.execute(
        select(runs.c.state).where(runs.c.id == run_id)).scalar_one_or_none())
    return None if state is None else RunState(state)


async def release_claims(db: Database, owner: str, run_ids: list[str], reason: str) -> None:
    """Hand claimed-but-unsubmitted runs back (shutdown): SCHEDULED again, at once claimable."""
    if not run_ids:
        return
    now = utcnow()

    def release(conn: Connection) -> None:
        released = [r for (r,) in conn.execute(
            update(runs).where(runs.c.id.in_(run_ids), runs.c.lease_owner == owner,
                               runs.c.state == PENDING, runs.c.infra_id.is_(None))
            .values(state=SCHEDULED, state_message=reason, lease_owner=None,
                    lease_expires=None, updated=now).returning(runs.c.id))]
        # Cancelled while in hand, and nothing was sent: unleased, the watcher ends them.
        conn.execute(update(runs).where(
            runs.c.id.in_(run_ids), runs.c.lease_owner == owner,
            runs.c.state == CANCELLING, runs.c.infra_id.is_(None))
            .values(lease_owner=None, lease_expires=None, updated=now))
        if released:
            conn.execute(insert(run_states), [
                {"run_id": r, "state": SCHEDULED, "timestamp": now, "message": reason}
                for r in released])

    await db.run(release, write=True)


async def end_claimed_runs(db: Database, owner: str,
                           outcomes: list[tuple[str, RunState, str]]) -> None:
    """Runs whose submit failed for good (or were cancelled before it): final states."""
    if not outcomes:
        return
    await db.run(lambda conn: transition_many(
        conn, [StateChange(run_id, state, message) for run_id, state, message in outcomes]),
        write=True)


@dataclass(frozen=True)
class WatchedRun:
    run_id: str
    state: RunState
    pool_type: str
    infra_id: str | None
    started_at: datetime | None
    created: datetime
    timeout_seconds: int | None
    log_cursor: str | None
    lease_owner: str | None
    lease_expires: datetime | None
    job_configuration: dict[str, Any] | None
    infra_connection: dict[str, Any] | None = None
    console_url: str | None = None


async def runs_to_watch(db: Database, *, after_id: str = "",
                        limit: int = 1000) -> list[WatchedRun]:
    """Submitted runs not yet final, and cancellations waiting for their run's claim, in id
    order after ``after_id``: the watcher pages through them so one pass stays short."""
    def read(conn: Connection) -> list[WatchedRun]:
        rows = conn.execute(
            select(runs.c.id, runs.c.state, work_pools.c.type, runs.c.infra_id,
                   runs.c.started_at, runs.c.created, runs.c.timeout_seconds,
                   runs.c.log_cursor, runs.c.lease_owner, runs.c.lease_expires,
                   runs.c.job_configuration, runs.c.infra_connection, runs.c.console_url)
            .join(work_pools, work_pools.c.id == runs.c.pool_id)
            .where(runs.c.state.in_(ACTIVE), runs.c.id > after_id,
                   or_(runs.c.infra_id.is_not(None),
                       runs.c.state == RunState.CANCELLING.value))
            .order_by(runs.c.id).limit(limit))
        return [WatchedRun(r.id, RunState(r.state), r.type, r.infra_id, r.started_at,
                           r.created, r.timeout_seconds, r.log_cursor, r.lease_owner,
                           r.lease_expires, r.job_configuration, r.infra_connection,
                           r.console_url) for r in rows]

    return await db.run(read)


@functools.cache
def _next_wakeup_query() -> Any:
    # One statement, built once: the dispatcher reads this after every claim that found
    # nothing.
    return select(
        _first_due_time(),
        _first_unsubmitted_lease_expiry(),
        _first_cancelled_lease_expiry(),
        select(func.min(work_pools.c.breaker_retry_at)).where(BY_BREAKER).scalar_subquery())


async def next_wakeup(db: Database) -> datetime | None:
    """When the dispatcher must look again: the next due run, the next lease to expire (in
    claimable pools and queues), or the next circuit-breaker probe."""
    def read(conn: Connection) -> tuple[Any, ...]:
        return tuple(conn.execute(_next_wakeup_query()).one())

    times = [t for t in await db.run(read) if t is not None]
    if not times:
        return None
    # Both columns are UTCDateTime, but func.min() loses the type on SQLite.
    return min(as_utc(t) for t in times)

