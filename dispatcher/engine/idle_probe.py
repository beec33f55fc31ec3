"""The idle probe, sent with asyncpg alone: whether a tick has anything to do.

A tick that finds nothing due is what a cloud function's timer (or a VM's cron, with
``pushpool tick``) wakes it for most of the time. Cold, the full tick first imports
SQLAlchemy, the store and the engine: about half a second, to learn that there is
nothing to do. ``probe`` opens one connection with asyncpg and reads ``PROBE_SQL``,
which ``dispatcher/store/idle.py`` builds from the claim's, the watcher's and the
scheduler's own expressions (its docstring says what each column means) and which is
kept here compiled for PostgreSQL, because compiling it would import SQLAlchemy;
``tests/test_idle_probe.py`` fails when the two differ. The probe answers None (run the
full tick) for anything it cannot judge: a store not at the scripts' head, an error, a
URL that is not PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatcher.engine.tick_summary import TickSummary

PROBE_SQL = (
    'SELECT (SELECT version_num \n'
    'FROM alembic_version \n'
    ' LIMIT 1) AS version, coalesce((SELECT min(anon_1.first) AS min_1 \n'
    'FROM (SELECT (SELECT runs.scheduled_time \n'
    'FROM runs \n'
    "WHERE runs.queue_id = work_queues.id AND runs.state = 'SCHEDULED' ORDER BY "
    'runs.scheduled_time \n'
    ' LIMIT 1) AS first \n'
    'FROM work_queues JOIN work_pools ON work_pools.id = work_queues.pool_id \n'
    'WHERE work_pools.paused IS false AND work_queues.paused IS false) AS anon_1) <= '
    '$2::TIMESTAMP WITHOUT TIME ZONE, false) AS due, coalesce((SELECT min(anon_2.first) '
    'AS min_2 \n'
    'FROM (SELECT (SELECT runs.lease_expires \n'
    'FROM runs \n'
    "WHERE runs.queue_id = work_queues.id AND runs.state = 'PENDING' AND runs.infra_id "
    'IS NULL ORDER BY runs.lease_expires \n'
    ' LIMIT 1) AS first \n'
    'FROM work_queues JOIN work_pools ON work_pools.id = work_queues.pool_id \n'
    'WHERE work_pools.paused IS false AND work_queues.paused IS false) AS anon_2) < '
    '$1::TIMESTAMP WITHOUT TIME ZONE, false) OR coalesce((SELECT min(runs.lease_expires) '
    'AS min_3 \n'
    'FROM runs JOIN work_queues ON work_queues.id = runs.queue_id JOIN work_pools ON '
    'work_pools.id = runs.pool_id \n'
    "WHERE runs.state = 'CANCELLING' AND runs.infra_id IS NULL AND runs.lease_owner IS "
    'NOT NULL AND work_pools.paused IS false AND work_queues.paused IS false) < '
    '$1::TIMESTAMP WITHOUT TIME ZONE, false) AS leases, EXISTS (SELECT 1 AS anon_3 \n'
    'FROM work_pools \n'
    "WHERE work_pools.paused IS true AND work_pools.paused_by = 'breaker' AND "
    '(work_pools.breaker_retry_at IS NULL OR work_pools.breaker_retry_at <= '
    '$1::TIMESTAMP WITHOUT TIME ZONE)) AS probes, EXISTS (SELECT 1 AS anon_4 \n'
    'FROM runs \n'
    "WHERE runs.state IN ('CANCELLING', 'PENDING', 'RUNNING') AND (runs.infra_id IS NOT "
    "NULL OR runs.state = 'CANCELLING')) AS watch, EXISTS (SELECT 1 AS anon_5 \n"
    'FROM schedules JOIN deployments ON deployments.id = schedules.deployment_id \n'
    'WHERE schedules.active IS true AND deployments.paused IS false AND '
    '(schedules.materialised_until IS NULL OR schedules.materialised_until < '
    '$3::TIMESTAMP WITHOUT TIME ZONE)) AS schedules'
)


@dataclass(frozen=True)
class ProbeAnswer:
    """What the probe read: each reason to run the full tick (see dispatcher/store/idle)."""

    due: bool
    leases: bool
    probes: bool
    watch: bool
    schedules: bool
    ms: float  # connect and read

    @property
    def idle(self) -> bool:
        return not (self.due or self.leases or self.probes or self.watch or self.schedules)


def probe_times(now: datetime, settings: Any) -> tuple[datetime, datetime, datetime]:
    """$1, $2, $3 of PROBE_SQL, naive UTC: now, the claim's due-by (its claim-ahead
    included) and how far every active schedule's runs must reach (half the horizon)."""
    naive = now.astimezone(UTC).replace(tzinfo=None)
    return (naive, naive + timedelta(seconds=settings.claim_ahead_seconds),
            naive + timedelta(seconds=settings.scheduler_horizon_seconds / 2))


def connect_kwargs(url: str) -> dict[str, Any] | None:
    """asyncpg.connect's arguments for a ``postgresql+asyncpg://`` store URL, as
    SQLAlchemy's dialect would pass them; None for any other store, or a URL whose query
    holds more than ``ssl`` (the full tick then connects as it always does)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("postgresql+asyncpg", "postgresql", "postgres"):
        return None
    query = dict(parse_qsl(parts.query))
    if set(query) - {"ssl"}:
        return None
    kwargs: dict[str, Any] = {
        "host": parts.hostname, "port": parts.port,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "database": unquote(parts.path.lstrip("/")) or None, **query}
    return {k: v for k, v in kwargs.items() if v is not None}


async def probe(url: str, settings: Any, head: str | None, now: datetime | None = None
                ) -> tuple[ProbeAnswer | None, Any]:
    """Read the probe in one asyncpg connection. Answers what it read (None: run the full
    tick: not PostgreSQL, the store not at ``head``, or an error, which the full tick then
    meets and reports) and the connection, still open when the full tick is to run: the
    store takes it over as its pool's first, so probing costs a tick with work no
    connection of its own."""
    import time

    kwargs = connect_kwargs(url)
    if kwargs is None or head is None:
        return None, None
    import asyncpg

    began = time.perf_counter()
    try:
        conn = await asyncpg.connect(timeout=10, **kwargs)
    except Exception:
        return None, None
    try:
        row = await conn.fetchrow(PROBE_SQL, *probe_times(now or datetime.now(UTC), settings))
    except Exception:  # no such table yet (a new store), or any other trouble
        await conn.close()
        return None, None
    if row is None or row["version"] != head:
        return None, conn
    answer = ProbeAnswer(bool(row["due"]), bool(row["leases"]), bool(row["probes"]),
                         bool(row["watch"]), bool(row["schedules"]),
                         round((time.perf_counter() - began) * 1000, 2))
    if answer.idle:
        await conn.close()
        return answer, None
    return answer, conn


async def idle_tick(settings: Any) -> tuple[TickSummary | None, Any]:
    """A tick answered by the probe alone: (its TickSummary, None) when there is nothing
    to do; otherwise (None, the probe's open connection or None) for the full tick, whose
    store takes that connection over (``Database.connect(first_connection=...)``)."""
    import logging
    import time

    from dispatcher.engine.tick_summary import TickSummary
    from dispatcher.schema_head import script_head

    if not settings.tick_idle_probe:
        return None, None
    began = time.perf_counter()
    answer, connection = await probe(settings.resolved_database_url(), settings,
                                     script_head())
    if answer is None or not answer.idle:
        return None, connection
    summary = TickSummary(idle=True, ms={
        "probe": answer.ms, "total": round((time.perf_counter() - began) * 1000, 2)})
    logging.getLogger("dispatcher.engine.tick").info("%s", summary.line())
    return summary, None
