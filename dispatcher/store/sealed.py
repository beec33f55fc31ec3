"""The sealed values the store holds: sealed again under a new key (key rotation), and the
check value that tells a process whether it has the key its store was sealed with.

Rotation goes page by page, each page one transaction, so it can stop anywhere and be run
again: a value already sealed under the first key is left as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.engine import Connection

from dispatcher.crypto import SecretBox, is_sealed
from dispatcher.sealing import reseal_json
from dispatcher.store.common import insert_ignoring_conflicts, utcnow
from dispatcher.store.db import Database
from dispatcher.store.tables import deployments, runs, server_secrets, webhooks, work_pools

KEY_CHECK = "secret-key-check"  # a server_secrets row: a known text, sealed
_KEY_CHECK_TEXT = "pushpool secret key check"
PAGE = 500

# Every column that may hold sealed values, by table (the primary key first).
SEALED_COLUMNS: tuple[tuple[Table, str, tuple[str, ...]], ...] = (
    (work_pools, "id", ("base_job_template",)),
    (deployments, "id", ("parameters", "parameter_schema", "job_variables")),
    (runs, "id", ("parameters", "job_variables", "job_configuration", "infra_connection")),
    (server_secrets, "name", ("value",)),
    (webhooks, "id", ("secret", "previous_secret")),
)


async def check_key(db: Database) -> None:
    """Raise SecretDecryptError unless ``db.secrets`` opens what the store was sealed with
    (a server started with another key would fail on every secret later, run by run)."""
    box = db.secrets

    def read_or_make(conn: Connection) -> str:
        conn.execute(insert_ignoring_conflicts(db.dialect, server_secrets, [
            {"name": KEY_CHECK, "value": box.seal(_KEY_CHECK_TEXT), "created": utcnow()}]))
        return str(conn.execute(select(server_secrets.c.value).where(
            server_secrets.c.name == KEY_CHECK)).scalar_one())

    box.open(await db.run(read_or_make, write=True))


async def rotation_done(db: Database, box: SecretBox) -> bool:
    """Whether the last rotation finished: the check value, resealed last, is under the
    first key (False too when there is none yet)."""
    value = await db.run(lambda conn: conn.execute(select(server_secrets.c.value).where(
        server_secrets.c.name == KEY_CHECK)).scalar_one_or_none())
    return value is not None and box.sealed_with_first(value)


@dataclass
class Resealed:
    """What a rotation pass did: values sealed again per table, rows read."""

    rows_read: int = 0
    resealed: dict[str, int] = field(default_factory=dict)


async def reseal_all(db: Database, box: SecretBox,
                     progress: Callable[[str, int], None] | None = None) -> Resealed:
    """Seal every stored secret under ``box``'s first key, page by page; the check value
    last, so ``rotation_done`` is True only once everything else is."""
    done = Resealed()
    for table, key, columns in SEALED_COLUMNS:
        after: str | None = ""
        while after is not None:
            page = functools.partial(_reseal_page, box=box, table=table, key=key,
                                     columns=columns, after=after)
            read, changed, after = await db.run(page, write=True)
            done.rows_read += read
            done.resealed[table.name] = done.resealed.get(table.name, 0) + changed
            if progress is not None:
                progress(table.name, read)
    await check_key(db)  # made under the first key if the store had none
    return done


def _reseal_page(conn: Connection, box: SecretBox, table: Table, key: str,
                 columns: tuple[str, ...], after: str) -> tuple[int, int, str | None]:
    """(rows read, rows rewritten, the last key or None at the end)."""
    pk = table.c[key]
    query = (select(pk, *(table.c[c] for c in columns)).where(pk > after)
             .order_by(pk).limit(PAGE))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # no writer changes a row between read and write
    rows = list(conn.execute(query))
    changed = 0
    for row in rows:
        values: dict[str, Any] = {}
        for column in columns:
            value = getattr(row, column)
            if value is None or (isinstance(value, str) and not is_sealed(value)):
                continue
            new, moved = reseal_json(value, box)
            if moved:
                values[column] = new
        if values:
            conn.execute(update(table).where(pk == getattr(row, key)).values(**values))
            changed += 1
    last = getattr(rows[-1], key) if len(rows) == PAGE else None
    return len(rows), changed, last
