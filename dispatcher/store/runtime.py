"""What the in-container runtime writes: its run's state (with the result) and log lines,
and the run-token signing key the replicas share.

Reports are idempotent: the runtime retries a report whose answer it never got, so a report
of the state the run is already in succeeds (and fills a missing result) instead of failing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from dispatcher import run_tokens
from dispatcher.errors import Conflict, InvalidInput, NotFound
from dispatcher.models import Run, RunState
from dispatcher.store.common import LogLineLike, insert_ignoring_conflicts, utcnow
from dispatcher.store.db import Database
from dispatcher.store.runs import (
    append_logs_in,
    read_run,
    steps_to,
    transition,
    transition_many,
)
from dispatcher.store.tables import runs, server_secrets

RUN_TOKEN_SECRET = "run-token-key"
REPORTABLE = (RunState.RUNNING, RunState.COMPLETED, RunState.FAILED)


async def run_token_key(db: Database, secret_key: str | None = None) -> bytes:
    """The key that signs run tokens: from ``secret_key`` when given, else the stored one
    (made on first use; replicas racing to make it all end up with the first one's)."""
    if secret_key:
        return run_tokens.key_from_secret(secret_key)
    box = db.secrets  # the stored key is itself sealed

    def read_or_make(conn: Connection) -> str:
        conn.execute(insert_ignoring_conflicts(db.dialect, server_secrets, [
            {"name": RUN_TOKEN_SECRET, "value": box.seal(secrets.token_hex(32)),
             "created": utcnow()}]))
        return str(conn.execute(select(server_secrets.c.value).where(
            server_secrets.c.name == RUN_TOKEN_SECRET)).scalar_one())

    return run_tokens.key_from_secret(box.open(await db.run(read_or_make, write=True)))


async def report_run_state(db: Database, run_id: str, state: RunState,
                           message: str | None = None, result: Any = None, *,
                           exit_code: int | None = None) -> Run:
    """The runtime says the flow started (RUNNING) or ended (COMPLETED, FAILED).

    Conflict when the run cannot take that state any more (cancelled, crashed, or ended
    otherwise): the runtime must then stop, not retry.
    """
    if state not in REPORTABLE:
        allowed = ", ".join(s.value for s in REPORTABLE)
        raise InvalidInput("state", f"{state.value} cannot be reported by a runtime",
                           f"use one of: {allowed}")

    def report(conn: Connection) -> Run:
        query = select(runs.c.state, runs.c.result, runs.c.exit_code).where(
            runs.c.id == run_id)
        if db.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"run {run_id!r} not found")
        current = RunState(row.state)
        given = {"result": result, "exit_code": exit_code}
        if current is state:  # a retried report whose first answer was lost
            missing = {k: v for k, v in given.items() if v is not None and row._mapping[k] is None}
            if missing:
                conn.execute(update(runs).where(runs.c.id == run_id).values(**missing))
        elif state is RunState.RUNNING:
            if current is not RunState.PENDING:
                raise Conflict(f"run {run_id} is {current.value}; it must not start now")
            transition(conn, run_id, RunState.RUNNING, message or "the flow started")
        else:
            if current.is_final:
                raise Conflict(f"run {run_id} already ended {current.value}; "
                               f"it cannot become {state.value}")
            fields = {k: v for k, v in given.items() if v is not None}
            transition_many(conn, steps_to(run_id, state, message, fields))
        return read_run(conn, run_id)

    return await db.run(report, write=True)


async def append_run_logs(db: Database, run_id: str, lines: Sequence[LogLineLike]) -> int:
    """Store the runtime's log lines after the run's others; answers how many."""
    def append(conn: Connection) -> int:
        if conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise NotFound(f"run {run_id!r} not found")
        append_logs_in(conn, {run_id: (lines, None)})
        return len(lines)

    return await db.run(append, write=True)
