"""Connecting to the store: engine setup for SQLite (WAL) and PostgreSQL, migrations at start.

Store functions are plain synchronous transactions over a SQLAlchemy ``Connection``, run by
``await db.run(fn, write=...)``:

- SQLite: in a worker thread on the standard ``sqlite3`` driver, the whole transaction in
  one hop (an async driver pays a thread hop per statement, about a millisecond each).
  Writes go through one writer thread (``BEGIN IMMEDIATE``), so writers queue here
  instead of in SQLite's sleeping busy handler; reads run beside them under WAL.
- PostgreSQL: on asyncpg through ``AsyncConnection.run_sync``, no threads involved. Every
  round trip counts here, so reads skip BEGIN/COMMIT and checkouts skip the pre-ping.

``db.secrets`` is the box that seals and opens the store's secret values (the layers above
decide what is secret, see ``dispatcher/sealing.py``). The SQLite file is made with mode
0600 and deletes overwrite what they free (``secure_delete``), so a value sealed in place
leaves no clear copy in the file.

Both engines hide statement parameters from their errors and logs: they hold secrets (env
values, the run-token signing key), and an error's text ends up in tracebacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url

from dispatcher.crypto import SecretBox
from dispatcher.store.schema_version import at_head

if TYPE_CHECKING:  # asyncio support (and with it the ORM) loads for PostgreSQL only
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every replica.
MIGRATION_LOCK_ID = 0x7075736870
CLAIM_LOCK_ID = 0x7075736871


def _sqlite_engine(url: str) -> Engine:
    sync_url = make_url(url).set(drivername="sqlite")
    engine = create_engine(sync_url, connect_args={"timeout": 30, "check_same_thread": False},
                           pool_size=8, max_overflow=0, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, decide how transactions start.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("pushpool_write", False)
        # Straight to the driver: every transaction starts here, and SQLAlchemy's statement
        # path (exec_driver_sql) costs about 20 us for a statement that returns nothing.
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgresql_engine(url: str, first_connection: Any = None) -> AsyncEngine:
    # A fixed pool and no overflow: past ten transactions at once, callers wait their turn
    # instead of opening connections that are closed again on return (a connection costs a
    # few milliseconds to open, more than queueing for one). One event loop drives them all,
    # so more connections would not run more at once. No pre-ping (a round trip per
    # transaction): a connection that died with the server fails its transaction, which
    # invalidates the whole pool, and the callers' retries find fresh connections.
    from sqlalchemy.ext.asyncio import create_async_engine

    options: dict[str, Any] = {}
    if first_connection is not None:
        options["async_creator"] = _handing_over(url, first_connection)
    engine = create_async_engine(url, pool_size=10, max_overflow=0, pool_pre_ping=False,
                                 hide_parameters=True, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # No JIT: every query here is a short index read or write, and the planner, which
        # counts the past runs' times when it estimates "due by now", judged the claim of
        # a pool with a limit costly enough to compile: 33 ms of compiling for 4 ms of
        # work. A SET rather than a startup parameter, which poolers such as PgBouncer
        # refuse.
        dbapi_conn.run_async(lambda conn: conn.execute("SET jit = off"))

    return engine


def _handing_over(url: str, first_connection: Any) -> Callable[[], Awaitable[Any]]:
    """An ``async_creator`` whose first connection is one already open (a cloud
    function's idle probe made it), then new ones made as SQLAlchemy would from ``url``."""
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    args, kwargs = dialect().create_connect_args(make_url(url))
    spare = [first_connection]

    async def connect() -> Any:
        if spare:
            return spare.pop()
        return await asyncpg.connect(*args, **kwargs)

    return connect


def _run_migrations(sync_conn: Connection, secrets: Callable[[], SecretBox]) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = sync_conn
    config.attributes["secrets"] = secrets  # 0010 seals the secrets an older store kept
    command.upgrade(config, "head")


def _private_file(path: Path) -> None:
    """``path`` exists with mode 0600 (an older file is narrowed, and it is said)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was readable by other users (mode %o); it is now 0600", path, mode)


def _settings_secrets() -> Callable[[], SecretBox]:
    from dispatcher.secret_keys import live_box
    from dispatcher.settings import get_settings

    return live_box(get_settings())


class Database:
    """One store and the way to run a transaction on it (see the module docstring)."""

    def __init__(self, url: str, *, sync_engine: Engine | None = None,
                 async_engine: AsyncEngine | None = None,
                 secrets: SecretBox | Callable[[], SecretBox] | None = None):
        self.url = url
        self._secrets = secrets
        self._sync_engine = sync_engine
        self._async_engine = async_engine
        engine_dialect = (sync_engine or async_engine).dialect  # type: ignore[union-attr]
        self.dialect: str = engine_dialect.name  # "sqlite" | "postgresql"
        if sync_engine is not None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="pushpool-db-write")
            self._readers = ThreadPoolExecutor(4, thread_name_prefix="pushpool-db-read")

    @property
    def secrets(self) -> SecretBox:
        """The box for this store's secrets: as given, else from the settings
        (PUSHPOOL_SECRET_KEY or the key file in PUSHPOOL_HOME), made on first use."""
        if self._secrets is None:
            self._secrets = _settings_secrets()
        return self._secrets if isinstance(self._secrets, SecretBox) else self._secrets()

    @secrets.setter
    def secrets(self, box: SecretBox | Callable[[], SecretBox]) -> None:
        self._secrets = box

    @classmethod
    async def connect(cls, url: str, *, migrate: bool = True,
                      secrets: SecretBox | Callable[[], SecretBox] | None = None,
                      first_connection: Any = None) -> Database:
        """``first_connection``: an open asyncpg connection to ``url`` (PostgreSQL) that
        becomes the pool's first, instead of opening another."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            # A URI (``file:...?mode=ro&uri=true``) names its file its own way, and one
            # opened read-only must not be created: only a plain path is made private.
            if parsed.database and parsed.database != ":memory:" \
                    and not parsed.query.get("uri"):
                _private_file(Path(parsed.database).expanduser())
            db = cls(url, sync_engine=_sqlite_engine(url), secrets=secrets)
        else:
            db = cls(url, async_engine=_postgresql_engine(url, first_connection),
                     secrets=secrets)
        # At head already (the usual case), the migration check is one read: Alembic is
        # not even imported.
        if migrate and not await db.run(at_head):
            await db.run(lambda conn: _migrate(conn, lambda: db.secrets), write=True)
            if db._sync_engine is not None:
                await asyncio.get_running_loop().run_in_executor(
                    db._writer, _checkpoint, db._sync_engine)
        return db

    async def run(self, fn: Callable[[Connection], T], *, write: bool = False) -> T:
        """Run ``fn(conn)`` as one transaction: committed if it returns, rolled back if it
        raises. ``write=True`` for anything that changes the store; without it ``fn`` must
        only read (on PostgreSQL it then runs without BEGIN and COMMIT, see below)."""
        if self._sync_engine is not None:
            loop = asyncio.get_running_loop()
            executor = self._writer if write else self._readers
            return await loop.run_in_executor(executor, self._run_sqlite, fn, write)
        assert self._async_engine is not None
        async with self._async_engine.connect() as conn:
            if not write:
                # Under READ COMMITTED every statement sees its own snapshot anyway, so a
                # read-only transaction gains nothing from BEGIN and COMMIT: two round trips.
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await conn.run_sync(fn)
            async with conn.begin():
                return await conn.run_sync(fn)

    def _run_sqlite(self, fn: Callable[[Connection], T], write: bool) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as conn:
            conn = conn.execution_options(pushpool_write=write)
            with conn.begin():
                return fn(conn)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(5):
                await self.run(lambda conn: conn.execute(text("SELECT 1")))
            return True
        except Exception:  # any failure means "not reachable" to the health check
            log.warning("database ping failed", exc_info=True)
            return False

    async def close(self) -> None:
        if self._sync_engine is not None:
            self._writer.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            self._sync_engine.dispose()
        if self._async_engine is not None:
            await self._async_engine.dispose()


def _migrate(conn: Connection, secrets: Callable[[], SecretBox]) -> None:
    if conn.dialect.name == "postgresql":
        # Replicas starting together must not run the same migration twice.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
    _run_migrations(conn, secrets)


def _checkpoint(engine: Engine) -> None:
    """Empty the write-ahead log into the file: pages a migration rewrote (secrets sealed
    in place) keep no older, clear copy in the log. Outside any transaction. A store opened
    read-only cannot be checkpointed and had nothing migrated: its first write says why."""
    with engine.connect() as conn:
        try:
            conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                "PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            log.debug("the write-ahead log was not checkpointed: %s", exc)
