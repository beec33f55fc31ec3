"""Google Cloud Functions (and Cloud Run functions) entry points, functions-framework style.

- ``http_function`` (``--trigger-http``, signature type http): every request goes to the
  API in-process (``host.py``): the same routes, validation and authentication as a
  server, webhooks included.
- ``cloud_event_function`` (signature type cloudevent): Cloud Scheduler publishing to a
  Pub/Sub topic (``google.cloud.pubsub.topic.v1.messagePublished``) runs a tick. An
  Eventarc event that carries a Cloud Run job execution (its audit-log entry, or a Pub/Sub
  message holding one) is applied to its run at once through the Cloud Run adapter, as
  ``POST /api/events/cloud-run`` would but without a token (Google delivered it), then a
  tick runs; any other event runs a tick, whose watch pass reads the active runs.

Google tells a function no remaining time: a tick takes at most ``PUSHPOOL_TICK_MAX_SECONDS``
(50 s by default), which must stay under the function's timeout (60 s by default).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import functions_framework

from dispatcher.triggers.host import HttpRequest, get_host, tick_budget

if TYPE_CHECKING:
    import flask
    from cloudevents.http import CloudEvent

    from providers.base import EventDelivery

log = logging.getLogger(__name__)

SCHEDULER_EVENT = "google.cloud.pubsub.topic.v1.messagePublished"


@functions_framework.http
def http_function(request: flask.Request) -> flask.Response:
    """The HTTP function: the API, forwarded in-process."""
    import flask

    host = get_host()
    forwarded = HttpRequest(request.method, request.path,
                            request.query_string.decode("latin-1"),
                            list(request.headers.items()), request.get_data())
    response = host.run(host.forward(forwarded, host.settings.tick_max_seconds))
    return flask.Response(response.body, status=response.status, headers=response.headers)


def _cloud_run_events(data: Any) -> EventDelivery | None:
    """The Cloud Run executions an event's data carries, read by the Cloud Run adapter
    (None when the data is not one it reads, e.g. Cloud Scheduler's message)."""
    from providers import registry
    from providers.base import TrustedEventSource

    try:
        provider = registry.get_provider("cloud-run:push")
    except registry.ProviderUnavailable:  # no [gcp] extra: the tick's poll covers it
        return None
    assert isinstance(provider, TrustedEventSource)
    try:
        return provider.parse_trusted_event(data if isinstance(data, dict) else {})
    except ValueError:  # not an execution change (a Scheduler message's text, say)
        return None


@functions_framework.cloud_event
def cloud_event_function(cloud_event: CloudEvent) -> None:
    """The CloudEvent function: a tick for Cloud Scheduler's messages and Eventarc events.
    A failed tick raises, so the platform answers 500 and redelivers the event."""
    kind = cloud_event["type"]
    host = get_host()
    delivery = _cloud_run_events(cloud_event.data)
    if delivery is not None and delivery.events:
        outcomes = host.run(host.apply_events(delivery.events))
        log.info("event %s: %d Cloud Run execution change(s), %d applied", kind,
                 len(delivery.events), sum(1 for o in outcomes if o.applied))
    elif kind != SCHEDULER_EVENT:
        log.info("event %s from %s: reading the active runs' statuses", kind,
                 cloud_event["source"])
    summary = host.run(host.tick(tick_budget(host.settings, None)))
    log.info("%s", summary.line())
