"""secrets sealed at rest

Stores made before this revision kept every value in clear. This revision seals, in place,
what ``dispatcher/sealing.py`` says is secret: declared secrets (``writeOnly`` /
``"format": "password"``) and secret-named env values of pool templates, deployments' job
variables and parameters, runs' parameters, job variables and rendered job
configurations, credentials in runs' infrastructure connections, and the stored run-token
key. It runs as a migration rather than a pass at first start so that every process that
opens the store (a server, a cloud function, the CLI) finds it sealed, all at once: the
schema version and the sealing commit together. The key is the store's
(``PUSHPOOL_SECRET_KEY`` or the key file in ``PUSHPOOL_HOME``), asked for only when there is
something to seal. Downgrading opens the values again, for a version that reads them clear.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 06:30:00
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from dispatcher import sealing, templates
from dispatcher.crypto import SecretBox, is_sealed

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PAGE = 500  # runs read and rewritten at a time
_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

work_pools = sa.table("work_pools", sa.column("id", sa.String),
                      sa.column("base_job_template", _JSON))
deployments = sa.table("deployments", sa.column("id", sa.String),
                       sa.column("pool_id", sa.String), sa.column("parameters", _JSON),
                       sa.column("parameter_schema", _JSON), sa.column("job_variables", _JSON))
runs = sa.table("runs", sa.column("id", sa.String), sa.column("pool_id", sa.String),
                sa.column("deployment_id", sa.String), sa.column("parameters", _JSON),
                sa.column("job_variables", _JSON), sa.column("job_configuration", _JSON),
                sa.column("infra_connection", _JSON))
server_secrets = sa.table("server_secrets", sa.column("name", sa.String),
                          sa.column("value", sa.Text))


def _box_source() -> Callable[[], SecretBox]:
    """The box, made on first use only (a store with no secrets needs no key)."""
    given = op.get_context().config
    source = given.attributes.get("secrets") if given is not None else None
    made: list[SecretBox] = []

    def box() -> SecretBox:
        if not made:
            if source is not None:
                made.append(source())
            else:  # `alembic upgrade` from a shell: the settings say which key
                from dispatcher.secret_keys import settings_box
                from dispatcher.settings import get_settings

                made.append(settings_box(get_settings()))
        return made[0]

    return box


def _pages(conn: sa.Connection) -> Iterator[list[Any]]:
    after = ""
    while True:
        rows = list(conn.execute(sa.select(runs).where(runs.c.id > after)
                                 .order_by(runs.c.id).limit(PAGE)))
        if not rows:
            return
        yield rows
        after = rows[-1].id


def _opened(value: Any, box: Callable[[], SecretBox]) -> Any:
    return sealing.open_json(value, box()) if _holds_sealed(value) else value


def _holds_sealed(value: Any) -> bool:
    if isinstance(value, str):
        return is_sealed(value)
    if isinstance(value, list):
        return any(_holds_sealed(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_sealed(v) for v in value.values())
    return False


def upgrade() -> None:
    conn = op.get_bind()
    box = _box_source()

    def seal(text: str) -> str:
        return sealing.sealer(box())(text)

    templates_by_pool: dict[str, dict[str, Any]] = {}
    for pool in conn.execute(sa.select(work_pools)):
        template = _opened(pool.base_job_template, box)
        templates_by_pool[pool.id] = template
        sealed = sealing.seal_template(template, seal, field=None)
        if sealed != pool.base_job_template:
            conn.execute(sa.update(work_pools).where(work_pools.c.id == pool.id)
                         .values(base_job_template=sealed))

    deployment_facts: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
    for dep in conn.execute(sa.select(deployments)):
        variables = templates_by_pool.get(dep.pool_id, {}).get("variables", {})
        job_variables = _opened(dep.job_variables or {}, box)
        deployment_facts[dep.id] = (job_variables, dep.parameter_schema)
        values = {
            "parameters": sealing.seal_parameters(dep.parameters or {}, dep.parameter_schema,
                                                  seal, field=None),
            "job_variables": sealing.seal_job_variables(job_variables, variables, seal,
                                                        field=None),
            "parameter_schema": dep.parameter_schema and sealing.seal_schema_defaults(
                dep.parameter_schema, seal)}
        if any(values[k] != getattr(dep, k) for k in values):
            conn.execute(sa.update(deployments).where(deployments.c.id == dep.id)
                         .values(**values))

    for page in _pages(conn):
        for run in page:
            values = _sealed_run(run, templates_by_pool, deployment_facts, seal)
            if values:
                conn.execute(sa.update(runs).where(runs.c.id == run.id).values(**values))

    for row in conn.execute(sa.select(server_secrets)):
        if not is_sealed(row.value):
            conn.execute(sa.update(server_secrets).where(server_secrets.c.name == row.name)
                         .values(value=box().seal(row.value)))


def _sealed_run(run: Any, templates_by_pool: dict[str, dict[str, Any]],
                deployment_facts: dict[str, tuple[dict[str, Any], dict[str, Any] | None]],
                seal: sealing.Seal) -> dict[str, Any]:
    """The columns of ``run`` that change once its secrets are sealed."""
    variables = templates_by_pool.get(run.pool_id, {}).get("variables", {})
    deployment_vars, parameter_schema = deployment_facts.get(run.deployment_id, ({}, None))
    run_vars = run.job_variables or {}
    merged = templates.merge_job_variables(templates.schema_defaults(variables),
                                           deployment_vars, run_vars)
    values: dict[str, Any] = {
        "parameters": sealing.seal_parameters(run.parameters or {}, parameter_schema, seal,
                                              field=None),
        "job_variables": sealing.seal_job_variables(run_vars, variables, seal, field=None)}
    if run.job_configuration is not None:
        values["job_configuration"] = sealing.seal_job_configuration(
            run.job_configuration, merged, variables, seal)
    if run.infra_connection is not None:
        values["infra_connection"] = sealing.seal_connection(run.infra_connection, seal)
    return {k: v for k, v in values.items() if v != getattr(run, k)}


def downgrade() -> None:
    conn = op.get_bind()
    box = _box_source()
    for table, key, columns in (
            (work_pools, "id", ("base_job_template",)),
            (deployments, "id", ("parameters", "parameter_schema", "job_variables")),
            (runs, "id", ("parameters", "job_variables", "job_configuration",
                          "infra_connection")),
            (server_secrets, "name", ("value",))):
        for row in conn.execute(sa.select(table)):
            values = {c: _opened(getattr(row, c), box) for c in columns}
            values = {c: v for c, v in values.items() if v != getattr(row, c)}
            if values:
                conn.execute(sa.update(table).where(table.c[key] == getattr(row, key))
                             .values(**values))
