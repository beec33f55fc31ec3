"""Bulk data for the scale benchmark, made with INSERT ... SELECT over a number series
(a recursive CTE on SQLite, generate_series on PostgreSQL): 100,000 deployments and
1,000,000 runs load in well under a minute instead of hours through the API.

The shape, with j = the deployment index:
- ``pools`` noop pools (made through ``store.create_pool``), deployment j in pool j % pools;
- deployment j has one cron schedule ``"{j % 60} {j // 60 % 24} * * *"`` (daily; the
  scheduler keeps ``per_schedule`` runs ahead, so those future runs are stored as the
  scheduler would store them: same slots, same idempotency keys);
- ``due`` SCHEDULED runs due in the last five minutes (what a claim finds);
- the rest are past runs over ``days`` days: 94% COMPLETED, 2% each FAILED, CRASHED and
  CANCELLED, with one history row each.

Run ids are ordered ('p-000000001'), not random: the load is several times faster and
the queries measured do not depend on id order. Columns this module does not know (added
by later migrations) take their server default or NULL; a NOT NULL column without either
fails with its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, select, text
from sqlalchemy.engine import Connection

from bench.noop_provider import NoopProvider
from dispatcher.models import ScheduleSpec, WorkPoolCreate
from dispatcher.store import Database, create_pool
from dispatcher.store.tables import deployments, run_states, runs, schedules, work_queues

DEP_PREFIX = "bench-dep-"
PAST_STATES = (("FAILED", 1), ("CRASHED", None), ("CANCELLED", None))  # 2% each, else COMPLETED


@dataclass(frozen=True)
class Shape:
    deployments: int = 100_000
    runs: int = 1_000_000
    pools: int = 10
    due: int = 1_000
    per_schedule: int = 3
    days: int = 30

    @property
    def future(self) -> int:
        return self.deployments * self.per_schedule

    @property
    def past(self) -> int:
        return max(0, self.runs - self.future - self.due)


class Dialect:
    """The few SQL snippets that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str):
        self.name = name
        self.pg = name == "postgresql"

    def series(self) -> tuple[str, str]:
        """(prefix, from clause) yielding n = 0 .. :count - 1."""
        if self.pg:
            return "", "FROM generate_series(0, CAST(:count AS bigint) - 1) AS seq(n)"
        return ("WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq "
                "WHERE n < :count - 1) ", "FROM seq")

    def pad(self, expr: str, width: int) -> str:
        if self.pg:
            return f"lpad(CAST(({expr}) AS text), {width}, '0')"
        return f"printf('%0{width}d', {expr})"

    def idiv(self, a: str, b: str) -> str:
        return f"(({a}) / ({b}))"  # integer operands divide as integers on both

    def moment(self, param: str, offset_seconds: str) -> str:
        """The timestamp :param plus ``offset_seconds``, as the store writes it."""
        if self.pg:
            return (f"(CAST(CAST(:{param} AS text) AS timestamp) + "
                    f"({offset_seconds}) * interval '1 second')")
        return f"(datetime(:{param}, printf('%+d seconds', {offset_seconds})) || '.000000')"

    def iso(self, param: str, offset_seconds: str) -> str:
        """The same moment as ``datetime.isoformat()`` of an aware UTC time."""
        if self.pg:
            return (f"to_char(CAST(CAST(:{param} AS text) AS timestamp) + ({offset_seconds}) * "
                    "interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')")
        return (f"strftime('%Y-%m-%dT%H:%M:%S+00:00', :{param}, "
                f"printf('%+d seconds', {offset_seconds}))")

    def json(self, param: str) -> str:
        return f"CAST(CAST(:{param} AS text) AS jsonb)" if self.pg else f":{param}"

    def boolean(self, value: bool) -> str:
        if self.pg:
            return "true" if value else "false"
        return "1" if value else "0"

    def stamp(self, moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _insert_select(d: Dialect, table: Table, exprs: dict[str, str]) -> str:
    """INSERT INTO table (...) SELECT ... over the series; unknown columns take their
    server default (omitted) or NULL, or a literal of their scalar Python default."""
    columns: dict[str, str] = {}
    for column in table.columns:
        if column.name in exprs:
            columns[column.name] = exprs[column.name]
        elif column.server_default is not None or column.nullable or column.autoincrement is True:
            continue
        elif column.default is not None and getattr(column.default, "is_scalar", False):
            value = column.default.arg  # type: ignore[attr-defined]
            columns[column.name] = (d.boolean(value) if isinstance(value, bool)
                                    else repr(value) if isinstance(value, int | float)
                                    else "'" + str(value).replace("'", "''") + "'")
        else:
            raise RuntimeError(f"the scale benchmark does not know how to fill "
                               f"{table.name}.{column.name}; add it to bench/scale_data.py")
    prefix, source = d.series()
    return (f"{prefix}INSERT INTO {table.name} ({', '.join(columns)}) "
            f"SELECT {', '.join(columns.values())} {source}")


def _dep(d: Dialect, n: str, count: int) -> str:
    return f"'{DEP_PREFIX}' || {d.pad(f'({n}) % {count}', 7)}"


async def make_pools(db: Database, count: int, prefix: str = "pool-"
                     ) -> tuple[list[str], list[str]]:
    """``count`` noop pools made through the store; their ids and default queues' ids."""
    # The store takes a pool's template as given (its checks live in dispatcher.operations,
    # which would look the type up in a registry this process has not been told of).
    template = NoopProvider().default_base_job_template()
    pool_ids = []
    for p in range(count):
        pool = await create_pool(db, WorkPoolCreate(name=f"{prefix}{p}", type="noop",
                                                    base_job_template=template))
        pool_ids.append(pool.id)
    rows = await db.run(lambda conn: list(conn.execute(
        select(work_queues.c.pool_id, work_queues.c.id).where(
            work_queues.c.pool_id.in_(pool_ids)))))
    by_pool = {r.pool_id: r.id for r in rows}
    return pool_ids, [by_pool[p] for p in pool_ids]


def _case(n: str, deployments_count: int, ids: list[str]) -> str:
    """The id of deployment ``n % deployments_count``'s pool (or queue)."""
    whens = " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(ids))
    return f"(CASE ({n}) % {deployments_count} % {len(ids)} {whens} END)"


async def insert_deployments(db: Database, count: int, pool_ids: list[str],
                             queue_ids: list[str], cron: str | None = None,
                             now: datetime | None = None, prefix: str = DEP_PREFIX,
                             flow: str = "flow-") -> None:
    """``count`` deployments (``{flow}{j // 100}/dep-{j}``, command ``["true"]``), each
    with one schedule: ``cron`` for all of them, or by default the daily
    ``"{j % 60} {j // 60 % 24} * * *"``."""
    d = Dialect(db.dialect)
    now = now or datetime.now(UTC)
    spec = json.dumps(ScheduleSpec(cron="0 0 * * *").model_dump(
        mode="json", exclude={"active"})).split('"0 0 * * *"')
    cron_sql = (_cron_json(d, spec, "n % 60", "(n / 60) % 24") if cron is None
                else d.json("spec"))
    params = {"now": d.stamp(now), "empty": "{}", "tags": "[]", "command": '["true"]',
              "spec": spec[0] + json.dumps(cron) + spec[1], "count": count}
    await _execute(db, _insert_select(d, deployments, {
        "id": f"'{prefix}' || {d.pad('n', 7)}",
        "flow_name": f"'{flow}' || {d.idiv('n', '100')}", "name": "'dep-' || n",
        "pool_id": _case("n", count, pool_ids), "queue_id": _case("n", count, queue_ids),
        "command": d.json("command"), "parameters": d.json("empty"),
        "job_variables": d.json("empty"), "tags": d.json("tags"),
        "paused": d.boolean(False), "created": d.moment("now", "-n"),
        "updated": d.moment("now", "-n")}), params)
    await _execute(db, _insert_select(d, schedules, {
        "id": f"'{prefix}s-' || {d.pad('n', 7)}",
        "deployment_id": f"'{prefix}' || {d.pad('n', 7)}", "position": "0",
        "spec": cron_sql, "active": d.boolean(True)}), params)


async def load(db: Database, shape: Shape, now: datetime | None = None) -> dict[str, float]:
    """Make the pools through the store, then everything else by bulk SQL; returns the
    seconds each step took."""
    import time

    now = now or datetime.now(UTC)
    d = Dialect(db.dialect)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    pool_ids, queue_ids = await make_pools(db, shape.pools)
    timings["pools"] = time.perf_counter() - started
    started = time.perf_counter()
    await insert_deployments(db, shape.deployments, pool_ids, queue_ids, now=now)
    timings["deployments and schedules"] = time.perf_counter() - started

    def case(n: str, ids: list[str]) -> str:
        return _case(n, shape.deployments, ids)

    template = _job_configuration()
    minute = f"(n % {shape.deployments}) % 60"
    hour = f"((n % {shape.deployments}) / 60) % 24"
    params: dict[str, Any] = {"now": d.stamp(now), "empty": "{}",
                              "config": json.dumps(template)}
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    params["midnight"] = d.stamp(midnight)
    steps: list[tuple[str, Table, int, dict[str, str]]] = []
    # Future runs: slot k (0..per_schedule-1) of deployment j is midnight + k days + H:M.
    slot = (f"(({d.idiv('n', str(shape.deployments))}) * 86400 + ({hour}) * 3600 + "
            f"({minute}) * 60)")
    run_common = {
        "deployment_id": _dep(d, "n", shape.deployments),
        "pool_id": case("n", pool_ids), "queue_id": case("n", queue_ids),
        "parameters": d.json("empty"), "job_variables": d.json("empty"),
        "job_configuration": d.json("config"), "dead_letter": d.boolean(False)}
    steps.append(("future runs", runs, shape.future, {
        **run_common, "id": f"'f-' || {d.pad('n', 9)}",
        "name": "'dep-' || (n % " + str(shape.deployments) + ") || '-slot-' || n",
        "state": "'SCHEDULED'", "state_message": "'scheduled by its schedule'",
        "scheduled_time": d.moment("midnight", slot), "attempt": "0",
        "idempotency_key": f"'scheduled:' || {_dep(d, 'n', shape.deployments)} || ':' || "
                           f"{d.iso('midnight', slot)}",
        "auto_scheduled": d.boolean(True), "created": d.moment("now", "0"),
        "updated": d.moment("now", "0")}))
    steps.append(("due runs", runs, shape.due, {
        **run_common, "id": f"'d-' || {d.pad('n', 9)}", "name": "'due-' || n",
        "state": "'SCHEDULED'",
        "state_message": "'created'", "scheduled_time": d.moment("now", "-(n % 300)"),
        "attempt": "0", "auto_scheduled": d.boolean(False),
        "created": d.moment("now", "-(n % 300)"), "updated": d.moment("now", "-(n % 300)")}))
    span = shape.days * 86400
    past_offset = f"(-1 - (({shape.past} - n) * {span}) / {max(shape.past, 1)})"
    state = " ".join(f"WHEN {i} THEN '{s}'" for i, (s, _) in enumerate(PAST_STATES))
    exit_code = " ".join(f"WHEN {i} THEN {'NULL' if c is None else c}"
                         for i, (_, c) in enumerate(PAST_STATES))
    steps.append(("past runs", runs, shape.past, {
        **run_common, "id": f"'p-' || {d.pad('n', 9)}", "name": "'past-' || n",
        "state": f"(CASE n % 50 {state} ELSE 'COMPLETED' END)",
        "state_message": "'done'", "scheduled_time": d.moment("now", past_offset),
        "attempt": "1", "infra_id": "'noop-past-' || n",
        "exit_code": f"(CASE n % 50 {exit_code} ELSE 0 END)",
        "started_at": d.moment("now", past_offset + " + 1"),
        "ended_at": d.moment("now", past_offset + " + 60"),
        "idempotency_key": f"'scheduled:' || {_dep(d, 'n', shape.deployments)} || ':' || "
                           f"{d.iso('now', past_offset)}",
        "auto_scheduled": d.boolean(True), "created": d.moment("now", past_offset),
        "updated": d.moment("now", past_offset + " + 60")}))

    for name, table, count, exprs in steps:
        if count <= 0:
            continue
        t0 = time.perf_counter()
        await _execute(db, _insert_select(d, table, exprs), {**params, "count": count})
        timings[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    await db.run(lambda conn: conn.execute(text(
        f"INSERT INTO {run_states.name} (run_id, state, message, timestamp) "
        f"SELECT id, state, 'loaded by the scale benchmark', updated FROM {runs.name}")),
        write=True)
    timings["run history"] = time.perf_counter() - t0
    if d.pg:
        # autovacuum would analyse a bulk load within a minute; do it now.
        t0 = time.perf_counter()
        await db.run(lambda conn: conn.execute(text("ANALYZE")), write=True)
        timings["analyze"] = time.perf_counter() - t0
    return timings


async def _execute(db: Database, sql: str, params: dict[str, Any]) -> None:
    statement = text(sql)
    used = {k: v for k, v in params.items() if f":{k}" in sql}
    await db.run(lambda conn: conn.execute(statement, used), write=True)


def _cron_json(d: Dialect, parts: list[str], minute: str, hour: str) -> str:
    """The schedule's spec JSON with its cron built from the row number."""
    def quoted(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    body = f"{quoted(parts[0] + chr(34))} || ({minute}) || ' ' || ({hour}) || ' * * *' || " \
           f"{quoted(chr(34) + parts[1])}"
    return f"CAST(({body}) AS jsonb)" if d.pg else body


def _job_configuration() -> dict[str, Any]:
    """What a run of a noop pool carries as its rendered job configuration."""
    return {"command": ["true"], "env": {}, "labels": {}}


async def counts(db: Database) -> dict[str, int]:
    def read(conn: Connection) -> dict[str, int]:
        out = {}
        for table in (deployments, schedules, runs, run_states):
            out[table.name] = int(conn.execute(text(f"SELECT count(*) FROM {table.name}"))
                                  .scalar_one())
        return out

    return await db.run(read)
