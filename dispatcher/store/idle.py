"""The idle probe's query: is there anything at all for a tick to do?

A cloud function woken by a timer usually finds nothing due, and its cold start is then
mostly the import of SQLAlchemy, the store and the engine (half a second) to learn that.
This query answers it in one read from the same expressions the claim, the watcher and
the scheduler use, so that ``dispatcher.engine.idle_probe`` can send it with asyncpg alone:
that module holds it compiled for PostgreSQL, and ``tests/test_idle_probe.py`` fails
when the two differ (``python -m dispatcher.store.idle`` prints the current text).

Each column is one reason to run the full tick; a tick runs it when any is true:

- ``due``: a run in an unpaused pool and queue is due by ``due_by`` (the claim's gate);
- ``leases``: a claim's lease ran out before its submit was recorded (taken back);
- ``probes``: a pool paused by its circuit breaker is due a probe;
- ``watch``: a submitted run is not final, or a cancellation waits for its claim;
- ``schedules``: an active schedule's runs reach less far than ``schedule_by``. The
  scheduler keeps runs up to its horizon ahead; a tick with nothing else to do extends
  them once they reach less than half of it (``schedule_by`` is now plus half the
  horizon), so every run still exists half a horizon before it is due.

``version`` is the store's migration, which must be the scripts' head.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import column, func, literal_column, or_, select, table
from sqlalchemy.sql.expression import bindparam

from dispatcher.models import RunState
from dispatcher.store.claims import (
    ACTIVE,
    _exists,
    _first_cancelled_lease_expiry,
    _first_due_time,
    _first_unsubmitted_lease_expiry,
)
from dispatcher.store.pool_breaker import BY_BREAKER
from dispatcher.store.scheduled_runs import _SCHEDULED_NOW
from dispatcher.store.tables import deployments, runs, schedules, work_pools


def idle_probe_query(now: Any = None, due_by: Any = None, schedule_by: Any = None) -> Any:
    """The query; its three times are bound parameters unless given as expressions."""
    now = bindparam("now") if now is None else now
    due_by = bindparam("due_by") if due_by is None else due_by
    schedule_by = bindparam("schedule_by") if schedule_by is None else schedule_by
    version = (select(column("version_num")).select_from(table("alembic_version"))
               .limit(1).scalar_subquery())
    return select(
        version.label("version"),
        func.coalesce(_first_due_time() <= due_by, False).label("due"),
        or_(func.coalesce(_first_unsubmitted_lease_expiry() < now, False),
            func.coalesce(_first_cancelled_lease_expiry() < now, False)).label("leases"),
        _exists(BY_BREAKER, or_(work_pools.c.breaker_retry_at.is_(None),
                                work_pools.c.breaker_retry_at <= now),
                table=work_pools).label("probes"),
        _exists(runs.c.state.in_(sorted(ACTIVE)),
                or_(runs.c.infra_id.is_not(None),
                    runs.c.state == RunState.CANCELLING.value),
                table=runs).label("watch"),
        _exists(_SCHEDULED_NOW,
                or_(schedules.c.materialised_until.is_(None),
                    schedules.c.materialised_until < schedule_by),
                table=schedules.join(deployments,
                                     deployments.c.id == schedules.c.deployment_id)
                ).label("schedules"))


def compiled_for_postgresql() -> str:
    """The query's text as asyncpg takes it: constants inline, the times as $1 (now), $2
    (due_by) and $3 (schedule_by), naive UTC as the store keeps them."""
    from sqlalchemy.dialects.postgresql import asyncpg

    def placeholder(n: int) -> Any:
        return literal_column(f"${n}::TIMESTAMP WITHOUT TIME ZONE")

    query = idle_probe_query(placeholder(1), placeholder(2), placeholder(3))
    return str(query.compile(dialect=asyncpg.dialect(),
                             compile_kwargs={"literal_binds": True}))


def as_python_source(sql: str, width: int = 84) -> str:
    """``PROBE_SQL = (...)`` for dispatcher/engine/idle_probe.py, in pieces that fit a line."""
    pieces: list[str] = []
    for line in sql.splitlines(keepends=True):
        while len(line) > width:
            cut = line.rfind(" ", 0, width) + 1 or width
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
    return "PROBE_SQL = (\n" + "".join(f"    {p!r}\n" for p in pieces if p) + ")"


if __name__ == "__main__":
    print(as_python_source(compiled_for_postgresql()))
