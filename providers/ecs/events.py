"""ECS task state -> InfraStatus, infra ids, and EventBridge "ECS Task State Change" parsing.

Pure functions, no boto3: the API's events route imports ``parse_task_state_change`` from
here without paying for the AWS SDK. The same ``task_status`` mapping serves DescribeTasks
answers and event details, which carry the same task fields.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

from providers.base import (
    EventAuthError,
    EventDelivery,
    EventsNotEnabled,
    InfraEvent,
    InfraPhase,
    InfraStatus,
    PermanentProviderError,
)

SECRET_HEADER = "X-Pushpool-Events-Secret"

# Every task pushpool starts carries startedBy "pushpool/<run>"; events for other tasks are
# none of our business (a rule on a shared cluster sees them all).
STARTED_BY_PREFIX = "pushpool/"

_PENDING_STATUSES = frozenset({"", "PROVISIONING", "PENDING", "ACTIVATING"})

# Substrings of stoppedReason / container reason that mean the infrastructure, not the
# flow, ended the run (AWS's "stopped task error codes").
_CRASH_MARKERS = (
    "CannotPullContainerError",
    "ResourceInitializationError",
    "CannotStartContainerError",
    "CannotCreateVolumeError",
    "CannotInspectContainerError",
    "OutOfMemory",
    "SpotInterruption",
    "InternalError",
)

_CRASH_STOP_CODES = {
    "TaskFailedToStart": "the task failed to start",
    "SpotInterruption": "Fargate Spot capacity was reclaimed",
    "ServiceSchedulerInitiated": "stopped by the ECS service scheduler",
    "TerminationNotice": "the task received a termination notice",
}

_SEP = "::"


def make_infra_id(region: str, cluster: str, task_arn: str) -> str:
    """``<region>::<cluster name>::<task ARN>``: what the store keeps for an ECS run."""
    return f"{region}{_SEP}{cluster_name(cluster)}{_SEP}{task_arn}"


def parse_infra_id(infra_id: str) -> tuple[str, str, str]:
    """(region, cluster name, task ARN) from an infra id made by ``make_infra_id``."""
    parts = infra_id.split(_SEP, 2)
    if len(parts) != 3 or not all(parts) or not parts[2].startswith("arn:"):
        raise PermanentProviderError(
            f"not an ECS infra id: {infra_id!r} (expected '<region>::<cluster>::<task ARN>')")
    return parts[0], parts[1], parts[2]


def cluster_name(cluster: str) -> str:
    """A cluster name from a name or an ARN (``arn:aws:ecs:r:acct:cluster/NAME``)."""
    return cluster.rsplit("/", 1)[-1] if cluster.startswith("arn:") else cluster


def task_id(task_arn: str) -> str:
    return task_arn.rsplit("/", 1)[-1]


def console_url(region: str, cluster: str, task_arn: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/ecs/v2/clusters/{cluster_name(cluster)}"
            f"/tasks/{task_id(task_arn)}/configuration?region={region}")


def main_container(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The container pushpool runs the flow in: the one named in our container override."""
    containers = task.get("containers") or []
    overrides = (task.get("overrides") or {}).get("containerOverrides") or []
    wanted = overrides[0].get("name") if overrides else None
    for container in containers:
        if wanted and container.get("name") == wanted:
            return container
    return containers[0] if containers else None


def task_status(task: Mapping[str, Any]) -> InfraStatus:
    """Map one ECS task (DescribeTasks entry or event detail) onto the shared phases."""
    last = str(task.get("lastStatus") or "")
    if last != "STOPPED":
        phase = InfraPhase.PENDING if last in _PENDING_STATUSES else InfraPhase.RUNNING
        return InfraStatus(phase)

    stop_code = str(task.get("stopCode") or "")
    stopped_reason = str(task.get("stoppedReason") or "")
    container = main_container(task)
    exit_code = container.get("exitCode") if container else None
    reasons = [stopped_reason] + [str(c.get("reason") or "") for c in task.get("containers") or []]
    aws_reason = "; ".join(r for r in reasons if r)

    def explain(summary: str) -> str:
        head = f"{stop_code}: {summary}" if stop_code else summary
        return f"{head} ({aws_reason})" if aws_reason else head

    for marker in _CRASH_MARKERS:
        if any(marker in r for r in reasons):
            return InfraStatus(InfraPhase.CRASHED, exit_code, explain(f"{marker} reported by ECS"))
    if stop_code in _CRASH_STOP_CODES:
        return InfraStatus(InfraPhase.CRASHED, exit_code, explain(_CRASH_STOP_CODES[stop_code]))
    if stop_code == "UserInitiated":
        return InfraStatus(InfraPhase.CANCELLED, exit_code, explain("the task was stopped"))
    if exit_code is None:
        return InfraStatus(InfraPhase.CRASHED, None,
                           explain("the container stopped without an exit code"))
    if exit_code == 0:
        return InfraStatus(InfraPhase.SUCCEEDED, 0)
    name = container.get("name") if container else "container"
    return InfraStatus(InfraPhase.FAILED, int(exit_code),
                       explain(f"container {name!r} exited with code {exit_code}"))


def missing_status(reason: str | None = None) -> InfraStatus:
    """A task ECS has no record of (stopped tasks are kept for about an hour)."""
    detail = reason or "MISSING"
    return InfraStatus(InfraPhase.MISSING, None,
                       f"{detail}: ECS has no record of the task (it never started, or it "
                       f"stopped more than about an hour ago)")


def parse_task_state_change(event: Mapping[str, Any]) -> tuple[str, InfraStatus] | None:
    """(infra_id, status) from an EventBridge "ECS Task State Change" event, else None.

    ``event`` is the event exactly as EventBridge delivers it (envelope with ``source``,
    ``detail-type``, ``region`` and ``detail``). Events of other kinds, malformed ones and
    tasks pushpool did not start return None.
    """
    if not isinstance(event, Mapping):
        return None
    if event.get("source") != "aws.ecs" or event.get("detail-type") != "ECS Task State Change":
        return None
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        return None
    task_arn = detail.get("taskArn")
    cluster_arn = detail.get("clusterArn")
    if not isinstance(task_arn, str) or not isinstance(cluster_arn, str):
        return None
    if not str(detail.get("startedBy") or "").startswith(STARTED_BY_PREFIX):
        return None
    region = event.get("region") or _arn_region(task_arn)
    if not isinstance(region, str) or not region:
        return None
    return make_infra_id(region, cluster_arn, task_arn), task_status(detail)


def _arn_region(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None


def parse_delivery(headers: Mapping[str, str], body: bytes, *,
                   shared_secret: str | None) -> EventDelivery:
    """One EventBridge API-destination delivery: the shared secret checked in constant
    time, then the event read. Events of other kinds or of tasks pushpool did not start
    are taken and ignored (EventBridge must not retry them); a body that is no
    EventBridge event at all is a ValueError."""
    if shared_secret is None:
        raise EventsNotEnabled(
            "provider events are not enabled; set PUSHPOOL_EVENTS_SECRET on the server and "
            f"send it in the {SECRET_HEADER} header")
    given = _header(headers, SECRET_HEADER)
    if not hmac.compare_digest(given.encode(), shared_secret.encode()):
        raise EventAuthError(f"missing or wrong {SECRET_HEADER} header")
    try:
        event = json.loads(body or b"null")
    except ValueError:
        raise ValueError("body: not JSON; send the EventBridge event as it is") from None
    return parse_event(event)


def parse_event(event: Any) -> EventDelivery:
    """One EventBridge event, already authenticated (by the shared secret of an HTTP
    delivery, or by AWS itself when EventBridge invokes a Lambda function with it)."""
    if not isinstance(event, dict):
        raise ValueError("body: expected an EventBridge event (a JSON object)")
    missing = [k for k in ("source", "detail-type", "detail") if k not in event]
    if missing or not isinstance(event.get("detail"), dict):
        names = ", ".join(missing) or "detail"
        raise ValueError(f"{names}: an EventBridge event needs source, detail-type and an "
                         "object detail")
    parsed = parse_task_state_change(event)
    if parsed is None:
        return EventDelivery(note="not an ECS task state change of a task pushpool started")
    infra_id, status = parsed
    run_id = str(event["detail"]["startedBy"]).removeprefix(STARTED_BY_PREFIX)
    return EventDelivery([InfraEvent(infra_id, status, run_id)])


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():  # any mapping, case-insensitive like HTTP
        if key.lower() == name.lower():
            return value
    return ""
