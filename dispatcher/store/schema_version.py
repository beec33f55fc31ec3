"""Whether a store is at the newest migration already, without loading Alembic.

Alembic's import and its reading of the migration scripts cost a few hundred milliseconds,
which every cloud-function cold start and ``pushpool tick`` would pay just to learn that
there is nothing to do. The head is read once per process from the scripts' own
``revision`` / ``down_revision`` lines (``dispatcher.schema_head``), and a store is at
head when its ``alembic_version`` row says so; otherwise (a new, older or unreadable
store) the migrations run as before.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from dispatcher.schema_head import VERSIONS_DIR, script_head

__all__ = ["VERSIONS_DIR", "at_head", "script_head"]


def at_head(conn: Connection) -> bool:
    """True when the store's recorded version is the scripts' head (one read)."""
    head = script_head()
    if head is None:
        return False
    try:
        versions = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    except DBAPIError:  # no such table yet, or no answer: the migration path says which
        return False
    return versions == [head]
