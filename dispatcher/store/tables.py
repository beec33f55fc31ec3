"""The database schema: SQLAlchemy Core tables shared by SQLite and PostgreSQL.

Times are stored as UTC and always come back timezone-aware (``UTCDateTime``); JSON
columns are JSONB on PostgreSQL. Alembic migrations under ``migrations/`` create these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import DateTime, TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC, on every backend alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


def as_utc(value: Any) -> datetime:
    """A time read back without its column type (``func.min()`` loses it on SQLite, JSON
    holds it as text) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a stored time: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
# Python None stored as SQL NULL (not JSON 'null'), so IS NULL finds it.
NullableJSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Id = String(36)
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

# Partial index predicates. A query uses such an index only when its WHERE clause holds
# the same condition with literal values (a bound parameter does not match on SQLite, nor
# in PostgreSQL's generic plans): store/claims.py writes the same conditions with literals.
RUN_SCHEDULED = "state = 'SCHEDULED'"
RUN_UNSUBMITTED = "state = 'PENDING' AND infra_id IS NULL"
DEPLOYMENT_LIMITED = "concurrency_limit IS NOT NULL"
DEPLOYMENT_POLICY = "catchup <> 'all' OR overlap <> 'allow'"

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

work_pools = Table(
    "work_pools", metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("type", String(100), nullable=False),
    Column("description", Text),
    Column("base_job_template", JSONType, nullable=False),
    Column("concurrency_limit", Integer),
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_reason", Text),
    # Who paused it: "user" (never resumed by itself) or "breaker" (the engine's circuit
    # breaker, which probes the provider from breaker_retry_at on and resumes it).
    Column("paused_by", String(20)),
    Column("breaker_retry_at", UTCDateTime),
    Column("late_after_seconds", Float, nullable=False, default=15.0),
    Column("provisioned", JSONType),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)

work_queues = Table(
    "work_queues", metadata,
    Column("id", Id, primary_key=True),
    Column("pool_id", Id, ForeignKey("work_pools.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("description", Text),
    Column("priority", Integer, nullable=False, default=1),
    Column("concurrency_limit", Integer),
    Column("paused", Boolean, nullable=False, default=False),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    UniqueConstraint("pool_id", "name"),
)

deployments = Table(
    "deployments", metadata,
    Column("id", Id, primary_key=True),
    Column("flow_name", String(100), nullable=False),
    Column("name", String(100), nullable=False),
    Column("pool_id", Id, ForeignKey("work_pools.id", ondelete="CASCADE"), nullable=False),
    Column("queue_id", Id, ForeignKey("work_queues.id", ondelete="CASCADE"), nullable=False),
    Column("command", JSONType),
    Column("entrypoint", Text),
    Column("source", Text),
    Column("image", Text),
    Column("parameters", JSONType, nullable=False),
    Column("parameter_schema", JSONType),
    Column("job_variables", JSONType, nullable=False),
    Column("tags", JSONType, nullable=False),
    Column("description", Text),
    Column("version", String(200)),
    Column("concurrency_limit", Integer),
    Column("paused", Boolean, nullable=False, default=False),
    Column("submit_deadline_seconds", Float, nullable=False, default=3600.0,
           server_default=text("3600")),
    Column("catchup", String(10), nullable=False, default="all", server_default="all"),
    Column("overlap", String(20), nullable=False, default="allow", server_default="allow"),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    UniqueConstraint("flow_name", "name"),
    # Each claim reads the deployments with a limit or a missed-run policy: few of many,
    # so partial indexes keep those reads proportional to them (store/claims.py).
    Index("ix_deployments_limited", "id", "concurrency_limit",
          sqlite_where=text(DEPLOYMENT_LIMITED), postgresql_where=text(DEPLOYMENT_LIMITED)),
    Index("ix_deployments_missed_run_policy", "id", "catchup", "overlap",
          sqlite_where=text(DEPLOYMENT_POLICY), postgresql_where=text(DEPLOYMENT_POLICY)),
)

schedules = Table(
    "schedules", metadata,
    Column("id", Id, primary_key=True),
    Column("deployment_id", Id, ForeignKey("deployments.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("spec", JSONType, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    # The last slot a run was stored for (scheduler.py makes only the slots after it).
    Column("materialised_until", UTCDateTime),
)

runs = Table(
    "runs", metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    # A final run outlives its deployment, pool and queue (migration 0008): their ids become
    # NULL and the names it ran under are kept in the former_* columns.
    Column("deployment_id", Id, ForeignKey("deployments.id", ondelete="SET NULL")),
    Column("pool_id", Id, ForeignKey("work_pools.id", ondelete="SET NULL")),
    Column("queue_id", Id, ForeignKey("work_queues.id", ondelete="SET NULL")),
    Column("former_pool_name", String(201)),
    Column("former_queue_name", String(201)),
    Column("former_deployment_name", String(201)),
    Column("state", String(20), nullable=False),
    Column("state_message", Text),
    Column("scheduled_time", UTCDateTime, nullable=False),
    Column("parameters", JSONType, nullable=False),
    Column("job_variables", JSONType, nullable=False),
    Column("job_configuration", JSONType),
    Column("attempt", Integer, nullable=False, default=0),
    Column("infra_id", Text),
    Column("console_url", Text),
    Column("infra_connection", NullableJSONType),  # InfraRef.connection: never shown
    Column("exit_code", Integer),
    Column("started_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("timeout_seconds", Integer),
    Column("idempotency_key", String(300), unique=True),
    Column("auto_scheduled", Boolean, nullable=False, default=False),
    Column("lease_owner", String(100)),
    Column("lease_expires", UTCDateTime),
    Column("log_cursor", Text),
    Column("result", JSONType),  # the flow's return value, reported by its runtime
    # Failed submit attempts [{at, error, probe}] while it is retried; kept when it ends.
    Column("submit_errors", NullableJSONType),
    Column("dead_letter", Boolean, nullable=False, default=False, server_default=false()),
    Column("resubmitted_from", Id),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    Index("ix_runs_state_scheduled_time", "state", "scheduled_time"),
    Index("ix_runs_pool_state", "pool_id", "state"),
    # With the time: a claim reads the due runs of the deployments with a missed-run policy.
    Index("ix_runs_deployment_state_time", "deployment_id", "state", "scheduled_time"),
    Index("ix_runs_queue_state", "queue_id", "state"),
    # `run ls` pages newest first, optionally filtered; id breaks ties in `created`.
    Index("ix_runs_created_id", "created", "id"),
    Index("ix_runs_state_created_id", "state", "created", "id"),
    Index("ix_runs_pool_created_id", "pool_id", "created", "id"),
    Index("ix_runs_deployment_created_id", "deployment_id", "created", "id"),
    # Dead letters are few: a partial index keeps `run ls --dead-letter` cheap for free.
    Index("ix_runs_dead_letter_created", "created", sqlite_where=text("dead_letter"),
          postgresql_where=text("dead_letter")),
    # The claim's due runs and the dispatcher's next wake-up, per unpaused queue; the
    # expired leases of claimed-but-unsubmitted runs. Both sets are small next to `runs`.
    Index("ix_runs_scheduled_queue_time_id", "queue_id", "scheduled_time", "id",
          sqlite_where=text(RUN_SCHEDULED), postgresql_where=text(RUN_SCHEDULED)),
    Index("ix_runs_unsubmitted_queue_lease", "queue_id", "lease_expires",
          sqlite_where=text(RUN_UNSUBMITTED), postgresql_where=text(RUN_UNSUBMITTED)),
)

run_states = Table(
    "run_states", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", Id, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("state", String(20), nullable=False),
    Column("message", Text),
    Column("timestamp", UTCDateTime, nullable=False),
)

run_logs = Table(
    "run_logs", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", Id, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("stream", String(20), nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_run_logs_run_id_id", "run_id", "id"),
)

# Secrets the replicas share through the database (e.g. the run-token signing key).
server_secrets = Table(
    "server_secrets", metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created", UTCDateTime, nullable=False),
)

# Webhooks (dispatcher/store/webhooks.py): signed entry points that start runs of one
# deployment. A deployment with webhooks is not deleted under them (no ON DELETE).
webhooks = Table(
    "webhooks", metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("slug", String(64), nullable=False, unique=True),  # the address: /hooks/{slug}
    Column("deployment_id", Id, ForeignKey("deployments.id"), nullable=False, index=True),
    Column("scheme", String(20), nullable=False),
    Column("parameters_template", Text),
    Column("idempotency_key_template", Text),
    Column("description", Text),
    Column("enabled", Boolean, nullable=False),
    Column("secret", Text, nullable=False),  # sealed (dispatcher/crypto.py)
    # The secret before the last rotation, sealed, accepted until previous_secret_expires.
    Column("previous_secret", Text),
    Column("previous_secret_expires", UTCDateTime),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)

# What each webhook remembers of the deliveries it took, so that a copy is refused: the
# signed delivery id (or the body's digest), until it could no longer be accepted anyway.
webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("webhook_id", Id, ForeignKey("webhooks.id", ondelete="CASCADE"), primary_key=True),
    Column("replay_key", String(300), primary_key=True),
    Column("run_id", Id),  # the run it made or found again (runs may be deleted since)
    Column("received", UTCDateTime, nullable=False),
    Column("expires", UTCDateTime, nullable=False),
    Index("ix_webhook_deliveries_webhook_id_expires", "webhook_id", "expires"),
)

# The dispatcher replicas running now (store/replicas.py): one row per server process, by
# the name it holds leases under; ``replica_id`` stays the same across its restarts.
replicas = Table(
    "replicas", metadata,
    Column("owner", String(100), primary_key=True),
    Column("replica_id", String(100), nullable=False, index=True),
    Column("started", UTCDateTime, nullable=False),
    Column("heartbeat", UTCDateTime, nullable=False),
)
