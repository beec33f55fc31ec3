"""Google Cloud Functions (and Cloud Run functions) entry points, functions-framework style.

- ``http_function`` (``--trigger-http``, signature type http): every request goes to the
  API in-process (``host.py``): the same routes, validation and authentication as a
  server, webhooks included.
- ``cloud_event_function`` (signature type cloudevent): Cloud Scheduler publishing to a
  Pub/Sub topic (``google.cloud.pubsub.topic.v1.messagePublished``) runs a tick; any other
  Eventarc event (a Cloud Run job execution written to the audit log, say) runs a tick
  too, whose watch pass reads the statuses of the active runs.

Google tells a function no remaining time: a tick takes at most ``PUSHPOOL_TICK_MAX_SECONDS``
(50 s by default), which must stay under the function's timeout (60 s by default).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import functions_framework

from dispatcher.triggers.host import HttpRequest, get_host, tick_budget

if TYPE_CHECKING:
    import flask
    from cloudevents.http import CloudEvent

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


@functions_framework.cloud_event
def cloud_event_function(cloud_event: CloudEvent) -> None:
    """The CloudEvent function: a tick for Cloud Scheduler's messages and Eventarc events.
    A failed tick raises, so the platform answers 500 and redelivers the event."""
    kind = cloud_event["type"]
    if kind != SCHEDULER_EVENT:
        log.info("event %s from %s: reading the active runs' statuses", kind,
                 cloud_event["source"])
    host = get_host()
    summary = host.run(host.tick(tick_budget(host.settings, None)))
    log.info("%s", summary.line())
