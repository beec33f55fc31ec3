"""Whether a store is at the newest migration already, without loading Alembic.

Alembic's import and its reading of the migration scripts cost a few hundred milliseconds,
which every cloud-function cold start and ``pushpool tick`` would pay just to learn that
there is nothing to do. The head is read once per process from the scripts' own
``revision`` / ``down_revision`` lines, and a store is at head when its ``alembic_version``
row says so; otherwise (a new, older or unreadable store) the migrations run as before.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
_ASSIGNMENT = re.compile(
    r"""^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(?:["']([^"']*)["']|None)""", re.M)


@lru_cache(maxsize=1)
def script_head(versions_dir: Path = VERSIONS_DIR) -> str | None:
    """The one revision no other script builds on; None if the scripts have several
    heads or none (then nothing is skipped: Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in versions_dir.glob("*.py"):
        found = dict((name, value) for name, value in _ASSIGNMENT.findall(script.read_text()))
        if found.get("revision"):
            revisions.add(found["revision"])
        if found.get("down_revision"):
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


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
