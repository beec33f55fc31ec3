"""Small helpers the store's query modules share: ids, clocks, insert-or-ignore."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def pairs(result: Iterable[Any]) -> dict[Any, Any]:
    """{first: second} of two-column rows (a Result has keys(), so dict() misreads it)."""
    return {row[0]: row[1] for row in result}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def insert_ignoring_conflicts(dialect: str, table: Table, rows: list[dict[str, Any]]) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING on either backend (idempotent materialisation)."""
    if dialect == "postgresql":
        return postgresql.insert(table).values(rows).on_conflict_do_nothing()
    return sqlite.insert(table).values(rows).on_conflict_do_nothing()


class LogLineLike(Protocol):
    """A log line as adapters and the runtime hand it over (a provider adapter's LogLine);
    the store takes any object of this shape, so it imports no provider code."""

    @property
    def timestamp(self) -> datetime: ...

    @property
    def message(self) -> str: ...

    @property
    def stream(self) -> str: ...
