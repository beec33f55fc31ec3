"""The schema the migrations build is the schema dispatcher/store/tables.py describes:
every table, column, index (partial indexes included) and foreign key, on both backends.
A migration that forgets what tables.py changed (or the reverse) fails here, not in a
benchmark."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from dispatcher.store import Database
from dispatcher.store.tables import metadata


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": False})
    return [d for d in compare_metadata(context, metadata)
            if not (isinstance(d, tuple) and d[0] == "remove_table"
                    and d[1].name == "alembic_version")]


async def test_migrations_build_the_schema_tables_py_describes(db: Database) -> None:
    assert await db.run(_differences) == []
