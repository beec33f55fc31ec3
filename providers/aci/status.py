"""Container group (ARM JSON) -> InfraStatus: the documented mapping of ACI's states.

Pure functions over the wire format (camelCase JSON as ARM returns it), so the mapping is
tested without the SDK and the same code reads a GET, a list entry and a fake's body.

native state -> phase:

- provisioningState Pending, Creating, Accepted, Updating, Repairing -> PENDING
  (CRASHED once older than start_timeout, with Azure's latest warnings)
- container Waiting (pulling, starting) -> PENDING (same timeout)
- container Waiting after a failed pull (ErrImagePull, ImagePullBackOff, a "Failed to
  pull image" event) -> CRASHED, Azure's message
- provisioningState Failed -> CRASHED, Azure's message; Canceled -> CRASHED
- instanceView Running, or container Running -> RUNNING
- instanceView Stopped (stopped by pushpool's cancel or by hand) -> CANCELLED
- provisioningState Deleting, container not terminated -> CANCELLED
- container Terminated: exit code 0 -> SUCCEEDED; other -> FAILED with the exit code;
  no exit code -> CRASHED
- instanceView Succeeded / Failed without container detail -> SUCCEEDED / FAILED
- no such group (404, or absent from the resource group's list) -> MISSING (PENDING for
  ``missing_grace_seconds`` right after submit: ARM's reads may lag its writes)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import InfraPhase, InfraStatus

PENDING_PROVISIONING = frozenset({"pending", "creating", "accepted", "updating", "repairing",
                                  ""})
PULL_FAILURES = frozenset({"errimagepull", "imagepullbackoff", "invalidimagename",
                           "registryunavailable"})


def _props(group: Mapping[str, Any]) -> Mapping[str, Any]:
    props = group.get("properties")
    return props if isinstance(props, Mapping) else {}


def main_container(group: Mapping[str, Any], name: str | None) -> Mapping[str, Any] | None:
    containers = _props(group).get("containers") or []
    for container in containers:
        if name and container.get("name") == name:
            return container
    return containers[0] if containers else None


def _view(container: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not container:
        return {}
    view = (container.get("properties") or {}).get("instanceView")
    return view if isinstance(view, Mapping) else {}


def _events(group: Mapping[str, Any], container: Mapping[str, Any] | None
            ) -> list[Mapping[str, Any]]:
    group_view = _props(group).get("instanceView") or {}
    return [*(group_view.get("events") or []), *(_view(container).get("events") or [])]


def azure_reason(group: Mapping[str, Any], container: Mapping[str, Any] | None) -> str:
    """Azure's own words for what went wrong: the latest Warning events."""
    warnings = [e for e in _events(group, container)
                if str(e.get("type") or "").lower() == "warning" and e.get("message")]
    seen: list[str] = []
    for event in warnings[-3:]:
        text = f"{event.get('name') or 'Warning'}: {event['message']}"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen)


def _pull_failure(group: Mapping[str, Any], container: Mapping[str, Any] | None) -> str | None:
    current = _view(container).get("currentState") or {}
    detail = str(current.get("detailStatus") or "")
    if detail.replace(" ", "").lower() in PULL_FAILURES:
        return azure_reason(group, container) or detail
    for event in _events(group, container):
        message = str(event.get("message") or "")
        if str(event.get("type") or "").lower() == "warning" and \
                "failed to pull image" in message.lower():
            return f"{event.get('name') or 'Failed'}: {message}"
    return None


def group_status(group: Mapping[str, Any], *, container_name: str | None = None,
                 pending_for: float | None = None, start_timeout: float | None = None
                 ) -> InfraStatus:
    """Map one container group onto the shared phases.

    ``pending_for`` is how long (seconds) the group has existed, for ``start_timeout``.
    A list entry (no instanceView) gives PENDING, RUNNING-unknown cases are left to
    the caller: see ``needs_detail``.
    """
    props = _props(group)
    provisioning = str(props.get("provisioningState") or "").lower()
    view = props.get("instanceView") or {}
    state = str(view.get("state") or "").lower()
    container = main_container(group, container_name)
    current = _view(container).get("currentState") or {}
    cstate = str(current.get("state") or "").lower()
    exit_code = current.get("exitCode")
    exit_code = int(exit_code) if isinstance(exit_code, int | float) else None

    if provisioning == "failed":
        reason = azure_reason(group, container) or "no reason given"
        return InfraStatus(InfraPhase.CRASHED, exit_code,
                           f"Azure could not provision the container group: {reason}")
    if provisioning == "canceled":
        return InfraStatus(InfraPhase.CRASHED, exit_code,
                           "Azure cancelled provisioning the container group")
    if state == "stopped":
        return InfraStatus(InfraPhase.CANCELLED, exit_code, "the container group was stopped")
    if cstate == "terminated":
        if exit_code is None:
            detail = current.get("detailStatus") or "no exit code"
            return InfraStatus(InfraPhase.CRASHED, None,
                               f"the container ended without an exit code ({detail})")
        if exit_code == 0:
            return InfraStatus(InfraPhase.SUCCEEDED, 0)
        detail = current.get("detailStatus")
        name = (container or {}).get("name") or "container"
        return InfraStatus(InfraPhase.FAILED, exit_code,
                           f"container {name!r} exited with code {exit_code}"
                           + (f" ({detail})" if detail else ""))
    if provisioning == "deleting":
        return InfraStatus(InfraPhase.CANCELLED, None,
                           "the container group is being deleted (outside pushpool)")
    pull = _pull_failure(group, container)
    if pull:
        return InfraStatus(InfraPhase.CRASHED, None, f"the image could not be pulled: {pull}")
    if cstate == "running" or (state == "running" and cstate in ("", "running")):
        return InfraStatus(InfraPhase.RUNNING)
    if state == "succeeded":
        return InfraStatus(InfraPhase.SUCCEEDED, exit_code if exit_code is not None else 0)
    if state == "failed":
        return InfraStatus(InfraPhase.FAILED, exit_code,
                           azure_reason(group, container) or "the container group failed")
    if pending_for is not None and start_timeout is not None and pending_for > start_timeout:
        reason = azure_reason(group, container)
        return InfraStatus(InfraPhase.CRASHED, None,
                           f"still pending after {start_timeout:g}s (start_timeout)"
                           + (f": {reason}" if reason else ""))
    return InfraStatus(InfraPhase.PENDING)


def needs_detail(listed: Mapping[str, Any]) -> bool:
    """Whether a list entry (which carries no instanceView) says enough on its own.

    Pending provisioning: still pending, the list says it all. Anything else (running,
    finished, failed with a message to read) needs a GET of the group.
    """
    provisioning = str(_props(listed).get("provisioningState") or "").lower()
    return provisioning not in PENDING_PROVISIONING


def has_started(listed: Mapping[str, Any]) -> bool:
    """Provisioned: ACI has pulled the image and started the containers (they may have
    ended since; only a GET's instance view tells)."""
    return str(_props(listed).get("provisioningState") or "").lower() == "succeeded"


def missing_status() -> InfraStatus:
    return InfraStatus(InfraPhase.MISSING, None,
                       "Azure has no such container group (deleted, or never made)")

