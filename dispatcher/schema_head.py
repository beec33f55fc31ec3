"""The newest migration's revision, read from the scripts' text (no Alembic, no SQLAlchemy).

Kept outside ``dispatcher.store`` so that the idle probe of a cloud function's tick
(``dispatcher.engine.idle_probe``) can compare a store's version with it without importing
the store.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

VERSIONS_DIR = Path(__file__).parent / "store" / "migrations" / "versions"
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
