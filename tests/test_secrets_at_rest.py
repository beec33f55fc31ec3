"""Secrets at rest: sealed in the store (SQLite file, PostgreSQL tables), clear for the
adapter, masked by the API, declared by schema (SecretStr, writeOnly), existing stores
sealed by migration 0010, and the key rotated with ``pushpool secrets rotate-key``."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from alembic.config import Config
from pydantic import SecretStr
from sqlalchemy import text
from typer.testing import CliRunner

from dispatcher import crypto, flows, operations, sealing, store
from dispatcher.api import create_app
from dispatcher.cli import app as cli_app
from dispatcher.crypto import SecretBox, SecretDecryptError, is_sealed
from dispatcher.engine.engine import Engine
from dispatcher.errors import InvalidInput
from dispatcher.models import DeploymentApply, RunCreate, RunState, WorkPoolCreate
from dispatcher.operations.secrets import rotate_key
from dispatcher.secret_keys import settings_box
from dispatcher.settings import Settings, get_settings
from dispatcher.store import Database
from dispatcher.store.db import MIGRATIONS_DIR
from dispatcher.store.sealed import SEALED_COLUMNS, check_key
from dispatcher.store.tables import metadata
from providers import registry
from tests.conftest import wait_for
from tests.fakes.recording_provider import STATE, RecordingProvider

registry.register_provider("recording", "tests.fakes.recording_provider")


def marks() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    names = ("pool_password", "pool_token", "dep_password", "mypass", "api_key",
             "run_password", "run_secret", "client_secret")
    return {name: f"mark-{name}-{tag}" for name in names}


def flow_needing_a_password(user: str, password: SecretStr) -> None:
    """A flow whose ``password`` parameter is declared secret, as Prefect users write."""


def pool_template(m: dict[str, str]) -> dict[str, Any]:
    template = RecordingProvider().default_base_job_template()
    props = template["variables"]["properties"]
    props["api_password"] = {"type": ["string", "null"], "writeOnly": True,
                             "default": m["pool_password"]}
    props["env"] = {"type": "object", "default": {"POOL_TOKEN": m["pool_token"]},
                    "properties": {"MYPASS": {"type": "string", "format": "password"}},
                    "additionalProperties": {"type": ["string", "null"]}}
    template["job_configuration"]["auth"] = "Bearer {{ api_password }}"
    return template


async def seed(db: Database, m: dict[str, str]) -> str:
    """A pool, a deployment and a run holding every kind of secret; the run's id."""
    await operations.pools.create_pool(db, WorkPoolCreate(
        name="rec", type="recording", base_job_template=pool_template(m)))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="rec", command=["job"],
        parameter_schema=flows.parameter_schema(flow_needing_a_password),
        parameters={"user": "ada", "password": m["dep_password"]},
        job_variables={"env": {"MYPASS": m["mypass"], "API_KEY": m["api_key"],
                               "MODE": "fast"}}))
    run, _ = await operations.runs.create_run(db, "f/d", RunCreate(
        parameters={"password": m["run_password"]},
        job_variables={"env": {"RUN_SECRET": m["run_secret"]}}))
    return run.id


async def stored_text(db: Database) -> bytes:
    """What an attacker with the database (file, or every table's rows) reads."""
    if db.dialect == "sqlite":
        path = Path(db.url.split("///", 1)[1])
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
                        if p.exists())

    def dump(conn: Any) -> bytes:
        return "\n".join(str(row[0]) for t in metadata.sorted_tables for row in conn.execute(
            text(f"SELECT CAST(t AS text) FROM {t.name} AS t"))).encode()

    return await db.run(dump)


def hits(blob: bytes, m: dict[str, str]) -> list[str]:
    return [name for name, value in m.items() if value.encode() in blob]


async def dispatched(db: Database, m: dict[str, str]) -> str:
    """``seed`` and the run submitted through the engine, its status read once."""
    STATE.reset()
    STATE.connection = {"region": "r1", "client_secret": m["client_secret"]}
    run_id = await seed(db, m)
    engine = Engine(db, Settings(watch_interval_seconds=0.05, scheduler_interval_seconds=3600))
    await engine.start()
    try:
        await wait_for(lambda: any(r.infra_id == f"rec-{run_id}" for r in STATE.status_refs),
                       what="the watcher to read the run's status")
    finally:
        await engine.stop()
    return run_id


async def test_no_secret_is_stored_in_clear_and_the_adapter_gets_clear_values(
        db: Database) -> None:
    m = marks()
    run_id = await dispatched(db, m)
    assert hits(await stored_text(db), m) == []
    spec = STATE.specs[run_id]
    assert spec.config["auth"] == f"Bearer {m['pool_password']}"
    assert {k: spec.env[k] for k in ("POOL_TOKEN", "MYPASS", "API_KEY", "RUN_SECRET")} == {
        "POOL_TOKEN": m["pool_token"], "MYPASS": m["mypass"], "API_KEY": m["api_key"],
        "RUN_SECRET": m["run_secret"]}
    assert json.loads(spec.env["PUSHPOOL_PARAMETERS"]) == {"user": "ada",
                                                           "password": m["run_password"]}
    seen = [r for r in STATE.status_refs if r.infra_id == f"rec-{run_id}"]
    assert seen[0].connection["client_secret"] == m["client_secret"]
    stored = await store.get_run(db, run_id)
    assert stored.state in (RunState.PENDING, RunState.RUNNING)
    assert stored.parameters["user"] == "ada" and is_sealed(stored.parameters["password"])


async def test_the_sqlite_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "pushpool.db"
    db = await Database.connect(f"sqlite+aiosqlite:///{path}")
    try:
        await seed(db, marks())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            if extra.exists():
                assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0
    finally:
        await db.close()
    os.chmod(path, 0o644)  # an older store, made before: narrowed when opened
    await (await Database.connect(f"sqlite+aiosqlite:///{path}")).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key_file = tmp_path / "home" / crypto.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_declared_secrets_are_masked_by_the_api_and_undeclared_ones_are_not(
        tmp_path: Path) -> None:
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    m = marks()
    try:
        run_id = await seed(db, m)
        app = create_app(db, None, Settings(home=tmp_path, api_token=None))
        async with TestClient(TestServer(app)) as client:
            run = await (await client.get(f"/api/runs/{run_id}")).json()
            deployment = await (await client.get("/api/deployments/f/d")).json()
            pool = await (await client.get("/api/work-pools/rec")).json()
            shown = json.dumps([run, deployment, pool]).encode()
            assert hits(shown, m) == []
            assert run["parameters"] == {"user": "ada", "password": "***"}
            assert deployment["job_variables"]["env"] == {
                "MYPASS": "***", "API_KEY": "***", "MODE": "fast"}
            assert run["job_configuration"]["auth"] == "***"
            props = pool["base_job_template"]["variables"]["properties"]
            assert props["api_password"]["default"] == "***"
            # The template comes back with its stars: refused where a secret was declared.
            props["env"]["default"] = {}
            answer = await client.patch("/api/work-pools/rec", json={
                "base_job_template": pool["base_job_template"]})
            assert answer.status == 422
            body = await answer.json()
            assert "variables.properties.api_password.default" in body["message"]
    finally:
        await db.close()


async def test_a_declared_secret_sent_back_as_stars_is_refused(db: Database) -> None:
    m = marks()
    await seed(db, m)
    with pytest.raises(InvalidInput) as refused:
        await operations.deployments.apply_deployment(db, DeploymentApply(
            name="d", flow_name="f", pool_name="rec", command=["job"],
            job_variables={"env": {"MYPASS": "***"}}))
    assert refused.value.field == "job_variables.env.MYPASS"
    deployment = await store.get_deployment(db, "f/d")
    assert sealing.open_json(deployment.job_variables, db.secrets)["env"]["MYPASS"] == \
        m["mypass"]


def test_a_secret_str_parameter_reaches_the_flow_as_a_secret_str() -> None:
    kwargs = flows.validate_parameters(flow_needing_a_password,
                                       {"user": "ada", "password": "s3cret-value"})
    assert isinstance(kwargs["password"], SecretStr)
    assert kwargs["password"].get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in f"{kwargs['password']} {kwargs['password']!r}"


def downgrade_to(url: str, revision: str, box: SecretBox) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url.replace("+aiosqlite", ""))
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes.update(connection=conn, secrets=lambda: box)
        command.downgrade(config, revision)
    engine.dispose()


async def test_migration_0010_seals_what_an_older_store_kept_in_clear(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    m = marks()
    db = await Database.connect(url)
    try:
        run_id = await seed(db, m)
        box = db.secrets
    finally:
        await db.close()
    downgrade_to(url, "0009", box)  # as an older version stored it
    older = await Database.connect(url, migrate=False)
    try:
        assert sorted(hits(await stored_text(older), m)) == sorted(set(m) - {"client_secret"})
    finally:
        await older.close()
    db = await Database.connect(url)  # upgrades through 0010
    try:
        assert hits(await stored_text(db), m) == []
        run = await store.get_run(db, run_id)
        assert sealing.open_json(run.parameters, db.secrets) == {
            "user": "ada", "password": m["run_password"]}
        assert sealing.open_json(run.job_configuration, db.secrets)["env"]["MYPASS"] == \
            m["mypass"]
    finally:
        await db.close()


async def all_sealed_values(db: Database) -> list[str]:
    found: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str) and is_sealed(value):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    def read(conn: Any) -> None:
        for table, _, columns in SEALED_COLUMNS:
            for row in conn.execute(table.select()):
                for column in columns:
                    collect(getattr(row, column))

    await db.run(read)
    return found


async def rotate_in_a_thread() -> Any:
    """The CLI command as a user runs it (it starts its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, cli_app, ["secrets", "rotate-key"])


async def test_rotate_key_with_the_key_file_reseals_everything_and_resumes(
        tmp_path: Path) -> None:
    home = Path(os.environ["PUSHPOOL_HOME"])
    url = f"sqlite+aiosqlite:///{home / 'pushpool.db'}"
    m = marks()
    db = await Database.connect(url)
    try:
        await dispatched(db, m)
        await check_key(db)
        old = crypto.read_key_file(home)
        assert len(old) == 1
        answer = await rotate_in_a_thread()
        assert answer.exit_code == 0, answer.output
        assert "Values sealed again" in answer.output
        keys = crypto.read_key_file(home)
        assert len(keys) == 2 and keys[1] == old[0]
        sealed = await all_sealed_values(db)
        assert len(sealed) >= 8
        new_only = SecretBox((keys[0],))
        assert all(new_only.sealed_with_first(v) for v in sealed)
        # The running process (db.secrets from the settings) sees the new key at once.
        assert db.secrets.keys[0] == keys[0]
        # A pass that stopped half-way: a new key first, nothing resealed yet.
        crypto.write_key_file(home, (crypto.new_key(), *keys))
        again = await rotate_in_a_thread()
        assert again.exit_code == 0, again.output
        assert "resumed" in again.output
        final = crypto.read_key_file(home)
        assert len(final) == 2 and final[1] == keys[0]
        assert all(SecretBox((final[0],)).sealed_with_first(v)
                   for v in await all_sealed_values(db))
        assert hits(await stored_text(db), m) == []
    finally:
        await db.close()


async def test_rotate_key_with_pushpool_secret_key(db: Database,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    m = marks()
    monkeypatch.setenv("PUSHPOOL_SECRET_KEY", "old passphrase")
    get_settings.cache_clear()
    db.secrets = settings_box(get_settings())
    await seed(db, m)
    await check_key(db)
    monkeypatch.setenv("PUSHPOOL_SECRET_KEY", "new passphrase")
    monkeypatch.setenv("PUSHPOOL_PREVIOUS_SECRET_KEYS", '["old passphrase"]')
    get_settings.cache_clear()
    rotation = await rotate_key(db, get_settings())
    assert rotation.resealed.resealed["runs"] == 1
    new_only = SecretBox((crypto.key_from_passphrase("new passphrase"),))
    db.secrets = new_only
    await check_key(db)
    deployment = await store.get_deployment(db, "f/d")
    assert sealing.open_json(deployment.parameters, new_only)["password"] == m["dep_password"]
    db.secrets = SecretBox((crypto.key_from_passphrase("old passphrase"),))
    with pytest.raises(SecretDecryptError):
        await check_key(db)


def test_rotate_key_with_a_key_that_opens_nothing_exits_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(os.environ["PUSHPOOL_HOME"])
    first = CliRunner().invoke(cli_app, ["secrets", "rotate-key"])
    assert first.exit_code == 0, first.output
    crypto.write_key_file(home, (crypto.new_key(),))  # the key was lost
    lost = CliRunner().invoke(cli_app, ["secrets", "rotate-key"])
    assert lost.exit_code == 1
    assert "PUSHPOOL_SECRET_KEY" in lost.output and "Traceback" not in lost.output
