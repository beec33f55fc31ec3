"""The store: SQLAlchemy 2 async tables and queries (SQLite embedded, PostgreSQL by URL).

``from dispatcher import store`` then ``await store.create_pool(db, ...)``.
"""

from dispatcher.store.claims import (
    Claim,
    ClaimedRun,
    SubmissionRecord,
    WatchedRun,
    claim_due_runs,
    claim_runs,
    end_claimed_runs,
    next_wakeup,
    record_submissions,
    release_claims,
    renew_leases,
    run_state,
    runs_to_watch,
)
from dispatcher.store.db import Database
from dispatcher.store.dead_letters import (
    dead_letter_runs,
    park_runs,
    resubmit_run,
)
from dispatcher.store.deployments import (
    apply_deployment,
    delete_deployment,
    get_deployment,
    list_deployments,
    update_deployment,
)
from dispatcher.store.pool_breaker import (
    close_pool_breaker,
    delay_breaker_probe,
    open_pool_breaker,
)
from dispatcher.store.pools import (
    create_pool,
    create_queue,
    delete_pool,
    delete_queue,
    get_pool,
    get_queue,
    list_pools,
    list_queues,
    set_pool_paused,
    update_pool,
    update_queue,
)
from dispatcher.store.run_ids import resolve_run_id
from dispatcher.store.runs import (
    append_logs,
    apply_state_changes,
    cancel_run,
    create_run,
    get_run,
    list_runs,
    preview_pool,
    read_logs,
    run_id_for_infra,
    scheduled_before,
    set_run_state,
)
from dispatcher.store.runtime import append_run_logs, report_run_state, run_token_key
from dispatcher.store.scheduled_runs import (
    ScheduleTarget,
    schedule_slot_key,
)
from dispatcher.store.stats import StoreStats, store_stats

__all__ = [
    "Claim",
    "ClaimedRun",
    "Database",
    "ScheduleTarget",
    "StoreStats",
    "SubmissionRecord",
    "WatchedRun",
    "append_logs",
    "append_run_logs",
    "apply_deployment",
    "apply_state_changes",
    "cancel_run",
    "claim_due_runs",
    "claim_runs",
    "close_pool_breaker",
    "create_pool",
    "create_queue",
    "create_run",
    "dead_letter_runs",
    "delay_breaker_probe",
    "delete_deployment",
    "delete_pool",
    "delete_queue",
    "end_claimed_runs",
    "get_deployment",
    "get_pool",
    "get_queue",
    "get_run",
    "list_deployments",
    "list_pools",
    "list_queues",
    "list_runs",
    "next_wakeup",
    "open_pool_breaker",
    "park_runs",
    "preview_pool",
    "read_logs",
    "record_submissions",
    "release_claims",
    "renew_leases",
    "report_run_state",
    "resolve_run_id",
    "resubmit_run",
    "run_id_for_infra",
    "run_state",
    "run_token_key",
    "runs_to_watch",
    "schedule_slot_key",
    "scheduled_before",
    "set_pool_paused",
    "set_run_state",
    "store_stats",
    "update_deployment",
    "update_pool",
    "update_queue",
]
