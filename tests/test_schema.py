"""The store's database as pushpool leaves it: the schema the migrations build is the one
dispatcher/store/tables.py describes (every table, column, index, partial indexes
included, and foreign key, on both backends), and PostgreSQL sessions carry pushpool's
settings and nothing a claim set for itself."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from dispatcher import store
from dispatcher.store import Database
from dispatcher.store.tables import metadata
from tests.conftest import truncate_postgres


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": False})
    return [d for d in compare_metadata(context, metadata)
            if not (isinstance(d, tuple) and d[0] == "remove_table"
                    and d[1].name == "alembic_version")]


async def test_migrations_build_the_schema_tables_py_describes(db: Database) -> None:
    assert await db.run(_differences) == []


def _settings(conn: Connection) -> tuple[str, str]:
    jit = conn.execute(text("SHOW jit")).scalar_one()
    plans = conn.execute(text("SHOW plan_cache_mode")).scalar_one()
    return jit, plans


async def test_postgresql_sessions_run_without_jit_and_claims_keep_their_plan_modes(
        postgres_url: str) -> None:
    truncate_postgres(postgres_url)
    db = await Database.connect(postgres_url, migrate=False)
    try:
        # A claim sets plan modes for its own statements (store/claims.py), local to its
        # transaction: the next one on the same pooled connection sees the default again.
        for _ in range(3):
            await store.claim_due_runs(db, "settings-test", limit=10, lease_seconds=60)
        # Transactions one after another reuse the pooled connection the claims ran on.
        assert await db.run(_settings, write=True) == ("off", "auto")
        assert await db.run(_settings) == ("off", "auto")
    finally:
        await db.close()
