"""Shared fixtures: a fresh store on SQLite and on PostgreSQL, and condition waiting.

The ``db`` fixture runs each test that uses it on both backends. PostgreSQL comes from
``PUSHPOOL_TEST_POSTGRES_URL`` (default: the local server on 127.0.0.1:5432); each test
session makes its own database. Under ``CI=true`` an unreachable server fails the run
instead of skipping, so the PostgreSQL tests can never silently vanish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from dispatcher.store import Database
from dispatcher.store.tables import metadata

PG_ADMIN_URL = os.environ.get("PUSHPOOL_TEST_POSTGRES_URL",
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")


async def wait_for(condition: Callable[[], Awaitable[T] | T], *, timeout: float = 10.0,  # noqa: ASYNC109
                   interval: float = 0.02, what: str = "condition") -> T:
    """Poll until ``condition()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if asyncio.iscoroutine(last) or isinstance(last, Awaitable):
            last = await last
        if last:
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def _admin(sql: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def _run_sync(coro: Awaitable[Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name = f"pushpool_test_{uuid.uuid4().hex[:10]}"
    try:
        _run_sync(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL not reachable ({exc}); set PUSHPOOL_TEST_POSTGRES_URL")
    url = _pg_url(name)

    async def migrate() -> None:
        db = await Database.connect(url)
        await db.close()

    _run_sync(migrate())
    yield url
    _run_sync(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate(db: Database) -> None:
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    await db.run(lambda conn: conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE")),
                 write=True)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        database = await Database.connect(url, migrate=False)
        await _truncate(database)
    try:
        yield database
    finally:
        await database.close()


def truncate_postgres(url: str) -> None:
    """Empty every table of the PostgreSQL store at ``url`` (a session shares one)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        await engine.dispose()

    _run_sync(run())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Server settings for each store: a server process's embedded SQLite, or the test
    session's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        return {}  # the embedded default under the server's PUSHPOOL_HOME
    url = request.getfixturevalue("postgres_url")
    truncate_postgres(url)
    return {"PUSHPOOL_DATABASE_URL": url}


@pytest.fixture
def sqlite_db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's ~/.pushpool."""
    monkeypatch.setenv("PUSHPOOL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PUSHPOOL_API_TOKEN", raising=False)
    monkeypatch.delenv("PUSHPOOL_DATABASE_URL", raising=False)
    from dispatcher.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture
def fresh_faulty_provider() -> Iterator[None]:
    """The ``faulty`` provider (faults over the recording provider) with no faults or
    submits left by another test, its jobs succeeding: ``pytestmark`` of the tests that
    use it."""
    from providers.base import InfraPhase
    from tests.fakes.faulty_provider import FAULTS
    from tests.fakes.recording_provider import STATE

    STATE.reset()
    FAULTS.reset()
    STATE.default_phase = InfraPhase.SUCCEEDED
    yield
    FAULTS.reset()
    STATE.reset()
