"""Execution (Cloud Run Admin API v2 JSON) -> InfraStatus: the documented state mapping.

Pure functions over the wire format (camelCase JSON, enum names), so the mapping is
tested without the SDK and the same code reads a ``get_execution``, a list entry and a
pushed event. An execution's state is its ``Completed`` condition plus its task counts;
exit codes live on its tasks (``lastAttemptResult.exitCode``, the Tasks API).

native state -> phase:

- Completed CONDITION_SUCCEEDED -> SUCCEEDED, exit code 0
- Completed CONDITION_FAILED, executionReason CANCELLED (or only cancelled tasks) ->
  CANCELLED
- Completed CONDITION_FAILED, a task with a non-zero exit code -> FAILED with that code
  (the first failed task's) and Google's message
- Completed CONDITION_FAILED, executionReason NON_ZERO_EXIT_CODE but no task read ->
  FAILED without an exit code
- Completed CONDITION_FAILED, no task ever ran (image not found, permission denied,
  quota, a bad secret) -> CRASHED with Google's message
- Completed CONDITION_FAILED, executionReason DELETED -> CRASHED (deleted while running)
- executionReason CANCELLING -> RUNNING (not final until Cloud Run says CANCELLED)
- not completed, another condition FAILED with severity ERROR (ResourcesAvailable,
  ContainerReady: the image or the service account is wrong) -> CRASHED with its message
- not completed, runningCount > 0 or some tasks already done -> RUNNING
- not completed, nothing running yet (CONDITION_PENDING, CONDITION_RECONCILING) -> PENDING
- no such execution (404: deleted, or its job was) -> MISSING with that reason

Cloud Run can tell a missing execution apart (404), so MISSING is exact, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from providers.base import InfraPhase, InfraStatus

SUCCEEDED = "CONDITION_SUCCEEDED"
FAILED = "CONDITION_FAILED"


def _conditions(execution: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = execution.get("conditions") or []
    return [c for c in items if isinstance(c, Mapping)]


def completed_condition(execution: Mapping[str, Any]) -> Mapping[str, Any]:
    for condition in _conditions(execution):
        if condition.get("type") == "Completed":
            return condition
    return {}


def _count(execution: Mapping[str, Any], name: str) -> int:
    try:
        return int(execution.get(name) or 0)
    except (TypeError, ValueError):
        return 0


def is_active(execution: Mapping[str, Any]) -> bool:
    """Whether the execution may still run (no completion time, no final condition)."""
    state = completed_condition(execution).get("state")
    return not execution.get("completionTime") and state not in (SUCCEEDED, FAILED)


def _task_failure(tasks: Sequence[Mapping[str, Any]]) -> tuple[int | None, str]:
    """(first non-zero exit code, Google's message for it) over the execution's tasks."""
    ordered = sorted(tasks, key=lambda t: int(t.get("index") or 0))
    for task in ordered:
        result = task.get("lastAttemptResult") or {}
        code = result.get("exitCode")
        if isinstance(code, int | float) and int(code) != 0:
            message = str((result.get("status") or {}).get("message") or "")
            return int(code), message
        signal = result.get("termSignal")
        if isinstance(signal, int | float) and int(signal) != 0:
            return 128 + int(signal), f"task {task.get('index', 0)} killed by signal {signal}"
    return None, ""


def execution_status(execution: Mapping[str, Any],
                     tasks: Sequence[Mapping[str, Any]] | None = None) -> InfraStatus:
    """Map one execution (and, when it failed, its tasks) onto the shared phases."""
    completed = completed_condition(execution)
    state = str(completed.get("state") or "")
    reason = str(completed.get("executionReason") or "")
    message = str(completed.get("message") or "")
    running = _count(execution, "runningCount")
    succeeded = _count(execution, "succeededCount")
    failed = _count(execution, "failedCount")
    cancelled = _count(execution, "cancelledCount")

    if state == SUCCEEDED:
        return InfraStatus(InfraPhase.SUCCEEDED, 0)
    if state == FAILED:
        if reason == "CANCELLED" or (cancelled and not failed and not succeeded):
            return InfraStatus(InfraPhase.CANCELLED, None,
                               message or "the execution was cancelled")
        if reason == "DELETED":
            return InfraStatus(InfraPhase.CRASHED, None,
                               message or "the execution was deleted while it ran")
        code, task_message = _task_failure(tasks or [])
        if code is not None:
            return InfraStatus(InfraPhase.FAILED, code,
                               task_message or message or f"a task exited with code {code}")
        if reason == "NON_ZERO_EXIT_CODE":  # the tasks could not be read this time
            return InfraStatus(InfraPhase.FAILED, None,
                               message or "a task exited with a non-zero code")
        return InfraStatus(InfraPhase.CRASHED, None,
                           f"Cloud Run could not run the execution: "
                           f"{message or 'no reason given'}")
    if reason == "CANCELLING":
        return InfraStatus(InfraPhase.RUNNING, None, "cancelling")
    for condition in _conditions(execution):
        if condition.get("type") == "Completed":
            continue
        if condition.get("state") == FAILED and condition.get("severity", "ERROR") == "ERROR":
            kind = condition.get("type") or "a condition"
            return InfraStatus(InfraPhase.CRASHED, None,
                               f"Cloud Run could not start the execution ({kind}): "
                               f"{condition.get('message') or condition.get('reason') or ''}"
                               .rstrip(": "))
    if running > 0 or succeeded or failed:
        return InfraStatus(InfraPhase.RUNNING)
    return InfraStatus(InfraPhase.PENDING)


def needs_tasks(execution: Mapping[str, Any]) -> bool:
    """A failed, not cancelled execution: its exit code is on its tasks."""
    completed = completed_condition(execution)
    return completed.get("state") == FAILED and \
        completed.get("executionReason") not in ("CANCELLED", "DELETED")


def missing_status(name: str) -> InfraStatus:
    return InfraStatus(InfraPhase.MISSING, None,
                       f"Cloud Run has no execution {name.rsplit('/', 1)[-1]} (it was deleted, "
                       "or its job was)")
