"""Event Grid deliveries about container groups: the validation handshake and ARM events.

ACI itself sends no container state events. An Event Grid subscription on the
subscription or resource group (system topic ``Microsoft.Resources``) delivers Azure
Resource Manager events about container groups: writes, deletes and actions such as
``stop``. Those that settle a run on their own become statuses (a deleted group is
MISSING, a stop is CANCELLED); a write says only "something changed", so it becomes a
PENDING status the state machine ignores (polling stays the primary path).

Authentication: the subscription sends the events secret in a delivery header
(``X-Pushpool-Events-Secret``, an Event Grid "delivery property" marked secret). The
handshake (``SubscriptionValidation``) is answered without it, since Event Grid may not
send custom headers with it and answering proves nothing to anyone else, but only while
events are enabled, and a wrong secret is refused.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from providers.base import (
    EventAuthError,
    EventDelivery,
    EventsNotEnabled,
    InfraEvent,
    InfraPhase,
    InfraStatus,
)

SECRET_HEADER = "X-Pushpool-Events-Secret"
VALIDATION_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
_GROUP_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                       r"Microsoft\.ContainerInstance/containerGroups/[^/]+$", re.IGNORECASE)


def infra_id_for(resource_id: str) -> str:
    """The infra id of a container group: its ARM resource id, lowercased (ARM ids are
    case-insensitive and events do not always keep the case the group was made with)."""
    return resource_id.rstrip("/").lower()


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _events_of(body: bytes) -> list[Mapping[str, Any]]:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ValueError("body: not JSON; send the Event Grid delivery as it is") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, Mapping) for i in items):
        raise ValueError("body: expected an Event Grid event or a list of them")
    return items


def _type_of(event: Mapping[str, Any]) -> str:
    return str(event.get("eventType") or event.get("type") or "")


def parse_delivery(headers: Mapping[str, str], body: bytes, *,
                   shared_secret: str | None) -> EventDelivery:
    if shared_secret is None:
        raise EventsNotEnabled(
            "provider events are not enabled; set PUSHPOOL_EVENTS_SECRET on the server and "
            f"send it in the {SECRET_HEADER} header (an Event Grid delivery property)")
    given = _header(headers, SECRET_HEADER)
    items = _events_of(body)
    validation = next((e for e in items if _type_of(e) == VALIDATION_TYPE), None)
    if given and not hmac.compare_digest(given.encode(), shared_secret.encode()):
        raise EventAuthError(f"wrong {SECRET_HEADER} header")
    if validation is not None or _header(headers, "aeg-event-type") == "SubscriptionValidation":
        data = (validation or items[0]).get("data") or {}
        code = data.get("validationCode") if isinstance(data, Mapping) else None
        if not code:
            raise ValueError("data.validationCode: a SubscriptionValidation event needs one")
        return EventDelivery(reply={"validationResponse": str(code)},
                             note="Event Grid subscription validated")
    if not given:
        raise EventAuthError(f"missing {SECRET_HEADER} header")
    events = [e for e in (event_of(item) for item in items) if e is not None]
    note = None if events else "no event about a container group"
    return EventDelivery(events, note=note)


def event_of(item: Mapping[str, Any]) -> InfraEvent | None:
    """One Event Grid (or CloudEvents) ARM event about a container group, else None."""
    kind = _type_of(item)
    data = item.get("data") if isinstance(item.get("data"), Mapping) else {}
    assert isinstance(data, Mapping)
    resource = str(data.get("resourceUri") or item.get("subject") or "")
    if not _GROUP_ID.match(resource):
        return None
    operation = str(data.get("operationName") or "").lower()
    infra_id = infra_id_for(resource)
    if kind == "Microsoft.Resources.ResourceDeleteSuccess":
        return InfraEvent(infra_id, InfraStatus(InfraPhase.MISSING, None,
                                                "the container group was deleted"))
    if kind == "Microsoft.Resources.ResourceActionSuccess" and operation.endswith("/stop/action"):
        return InfraEvent(infra_id, InfraStatus(InfraPhase.CANCELLED, None,
                                                "the container group was stopped"))
    if kind.startswith("Microsoft.Resources.Resource"):
        # A write or other action: the group changed, its new state needs a read.
        return InfraEvent(infra_id, InfraStatus(InfraPhase.PENDING, None, kind))
    return None
