"""Event Grid deliveries, the ACI log cursor, the status mapping and the budgets: the
pure parts of the ACI adapter, without the fake."""

from __future__ import annotations

import json

import pytest

from providers.aci import AciProvider
from providers.aci.events import SECRET_HEADER
from providers.aci.logs import new_lines
from providers.aci.ratelimit import WindowBudget
from providers.base import EventAuthError, EventsNotEnabled, InfraPhase, RetryableProviderError
from tests.providers.aci_harness import mapping_cases

GROUP = ("/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/RG/providers/"
         "Microsoft.ContainerInstance/containerGroups/pp-run-a1-1234abcd")


def arm_event(kind: str, operation: str, resource: str = GROUP) -> dict[str, object]:
    return {"id": "1", "topic": "/subscriptions/x", "subject": resource, "eventType": kind,
            "eventTime": "2026-01-01T00:00:00Z", "dataVersion": "2",
            "data": {"resourceUri": resource, "operationName": operation,
                     "status": "Succeeded"}}


def deliver(body: object, headers: dict[str, str] | None = None,
            secret: str | None = "s3") -> object:
    return AciProvider().parse_events(headers if headers is not None else {SECRET_HEADER: "s3"},
                                      json.dumps(body).encode(), shared_secret=secret)


def test_the_subscription_validation_handshake_is_answered() -> None:
    body = [{"id": "v", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
             "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                      "validationUrl": "https://rp-eastus2.eventgrid.azure.net/x"}}]
    delivery = deliver(body, {"aeg-event-type": "SubscriptionValidation"})
    assert delivery.reply == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    with pytest.raises(EventsNotEnabled):
        deliver(body, {}, secret=None)


def test_events_need_the_secret() -> None:
    event = [arm_event("Microsoft.Resources.ResourceDeleteSuccess",
                       "Microsoft.ContainerInstance/containerGroups/delete")]
    with pytest.raises(EventAuthError):
        deliver(event, {})
    with pytest.raises(EventAuthError):
        deliver(event, {SECRET_HEADER: "wrong"})
    with pytest.raises(ValueError, match=r"^body"):
        AciProvider().parse_events({SECRET_HEADER: "s3"}, b"{nope", shared_secret="s3")


def test_arm_events_about_container_groups_become_statuses() -> None:
    delivery = deliver([
        arm_event("Microsoft.Resources.ResourceDeleteSuccess",
                  "Microsoft.ContainerInstance/containerGroups/delete"),
        arm_event("Microsoft.Resources.ResourceActionSuccess",
                  "Microsoft.ContainerInstance/containerGroups/stop/action"),
        arm_event("Microsoft.Resources.ResourceWriteSuccess",
                  "Microsoft.ContainerInstance/containerGroups/write"),
        arm_event("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Storage/write",
                  "/subscriptions/x/resourceGroups/RG/providers/Microsoft.Storage/"
                  "storageAccounts/s")])
    phases = [e.status.phase for e in delivery.events]
    assert phases == [InfraPhase.MISSING, InfraPhase.CANCELLED, InfraPhase.PENDING]
    assert delivery.events[0].infra_id == GROUP.lower()  # what submit's infra id is


def test_the_log_cursor_skips_what_was_read_even_at_the_same_timestamp() -> None:
    content = ("2026-01-01T00:00:01.000000001Z a\n2026-01-01T00:00:01.000000001Z b\n"
               "  wrapped\n2026-01-01T00:00:02Z c\n")
    first = new_lines(content, None)
    assert [line.message for line in first.lines] == ["a", "b\n  wrapped", "c"]
    more = content + "2026-01-01T00:00:02Z d\n"
    second = new_lines(more, first.cursor)
    assert [line.message for line in second.lines] == ["d"]
    # ACI's window moved on (old lines dropped): still nothing twice.
    assert new_lines("2026-01-01T00:00:02Z c\n2026-01-01T00:00:02Z d\n",
                     second.cursor).lines == []
    assert new_lines("", None).cursor is None


def test_every_documented_native_state_maps() -> None:
    cases = mapping_cases()
    for case in cases:
        assert case.status.phase is case.expected, case.native
    assert {c.expected for c in cases} == set(InfraPhase) - {InfraPhase.MISSING}
    reasons = {c.native: c.status.reason for c in cases}
    assert "Failed to pull image" in str(reasons["ErrImagePull"])
    assert "start_timeout" in str(reasons["Waiting past start_timeout"])


async def test_the_create_budget_has_both_windows_and_a_retry_after_pause() -> None:
    now = [0.0]
    budget = WindowBudget("creates", "knobs", [(2, 300.0), (3, 3600.0)], max_wait=0.0,
                          clock=lambda: now[0])
    await budget.acquire()
    await budget.acquire()
    with pytest.raises(RetryableProviderError) as caught:
        await budget.acquire()
    assert caught.value.throttled and 149 < (caught.value.retry_after or 0) <= 150
    now[0] = 150.0
    await budget.acquire()  # the 5-minute window refilled one
    now[0] = 400.0
    with pytest.raises(RetryableProviderError):
        await budget.acquire()  # the hourly window is spent
    roomy = WindowBudget("creates", "knobs", [(100, 300.0)], max_wait=0.0,
                         clock=lambda: now[0])
    roomy.on_throttle(45.0)  # Azure's Retry-After wins over the bucket's own pace
    assert roomy.wait_time() == pytest.approx(45.0)
    now[0] += 46.0
    await roomy.acquire()
