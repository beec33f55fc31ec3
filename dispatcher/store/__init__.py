"""The store: SQLAlchemy 2 async tables and queries (SQLite embedded, PostgreSQL by URL).

``from dispatcher import store`` then ``await store.create_pool(db, ...)``.
"""

from dispatcher.store.claims import (
    ClaimedRun,
    ScheduleTarget,
    SubmissionRecord,
    WatchedRun,
    active_schedules,
    claim_due_runs,
    end_claimed_runs,
    insert_scheduled_runs,
    next_wakeup,
    record_submissions,
    release_claims,
    renew_leases,
    runs_to_watch,
    schedule_slot_key,
)
from dispatcher.store.db import Database
from dispatcher.store.deployments import (
    apply_deployment,
    delete_deployment,
    get_deployment,
    list_deployments,
    update_deployment,
)
from dispatcher.store.pools import (
    create_pool,
    create_queue,
    default_base_job_template,
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
from dispatcher.store.runs import (
    append_logs,
    cancel_run,
    create_run,
    get_run,
    list_runs,
    preview_pool,
    read_logs,
    set_run_state,
)
from dispatcher.store.runtime import append_run_logs, report_run_state, run_token_key

__all__ = [
    "ClaimedRun", "Database", "ScheduleTarget", "SubmissionRecord", "WatchedRun",
    "active_schedules", "append_logs", "append_run_logs", "apply_deployment", "cancel_run",
    "claim_due_runs", "create_pool", "create_queue", "create_run", "default_base_job_template",
    "delete_deployment", "delete_pool", "delete_queue", "end_claimed_runs", "get_deployment",
    "get_pool", "get_queue", "get_run", "insert_scheduled_runs", "list_deployments", "list_pools",
    "list_queues", "list_runs", "next_wakeup", "preview_pool", "read_logs", "record_submissions",
    "release_claims", "renew_leases", "report_run_state", "run_token_key", "runs_to_watch",
    "schedule_slot_key", "set_pool_paused", "set_run_state", "update_deployment", "update_pool",
    "update_queue",
]
