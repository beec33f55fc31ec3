"""A store already at the newest migration is opened with one read, without Alembic
(dispatcher/store/schema_version.py); a new store is still migrated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.store.db import MIGRATIONS_DIR
from dispatcher.store.schema_version import script_head

REPO_ROOT = Path(__file__).resolve().parent.parent
OPEN_STORE = """
import asyncio, json, sys
from dispatcher.store import Database

async def main():
    db = await Database.connect(sys.argv[1])
    count = await db.run(lambda conn: conn.exec_driver_sql(
        "SELECT count(*) FROM runs").scalar())
    await db.close()
    return count

count = asyncio.run(main())
print(json.dumps({"alembic": "alembic" in sys.modules, "runs": count}))
"""


def _open_in_fresh_process(url: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", OPEN_STORE, url], capture_output=True,
                          text=True, cwd=str(REPO_ROOT), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_the_head_read_from_the_scripts_is_alembics() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert script_head() == ScriptDirectory.from_config(config).get_current_head()


def test_several_heads_mean_no_skipping(tmp_path: Path) -> None:
    for name, revision, parent in (("a", "1", None), ("b", "2", "1"), ("c", "3", "1")):
        (tmp_path / f"{name}.py").write_text(
            f'revision = "{revision}"\ndown_revision = {parent and repr(parent)}\n')
    assert script_head.__wrapped__(tmp_path) is None
    (tmp_path / "d.py").write_text('revision: str = "4"\ndown_revision = "2"\n')
    (tmp_path / "c.py").unlink()
    assert script_head.__wrapped__(tmp_path) == "4"


def test_a_new_store_is_migrated_and_one_at_head_opens_without_alembic(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    assert _open_in_fresh_process(url) == {"alembic": True, "runs": 0}
    assert _open_in_fresh_process(url) == {"alembic": False, "runs": 0}


def test_a_postgresql_store_at_head_opens_without_alembic(postgres_url: str) -> None:
    answer = _open_in_fresh_process(postgres_url)
    assert answer["alembic"] is False


@pytest.fixture(autouse=True)
def _fresh_head_cache() -> None:
    script_head.cache_clear()
