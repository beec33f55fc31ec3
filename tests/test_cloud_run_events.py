"""cloud-run:push pushed events: Pub/Sub push and Eventarc deliveries, authenticated by
the push subscription's OIDC token (verified against a key set the fake serves) or the
shared secret; forged, expired and misaddressed tokens are refused."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from providers.base import EventAuthError, EventsNotEnabled, InfraPhase
from providers.cloud_run import CloudRunProvider
from providers.cloud_run.events import SECRET_HEADER
from tests.fakes.cloud_run import FakeGoogle, SigningKey, shared_fake
from tests.providers.cloud_run_harness import make_provider

AUDIENCE = "https://pushpool.example.com/api/events/cloud-run"
PUSHER = "eventarc-push@pushpool-test.iam.gserviceaccount.com"
NAME = "projects/pushpool-test/locations/us-central1/jobs/j/executions/j-abcde"


@pytest.fixture
def fake() -> FakeGoogle:
    made = shared_fake()
    made.reset()
    return made


@pytest.fixture
async def provider(fake: FakeGoogle) -> AsyncIterator[CloudRunProvider]:
    made = make_provider(events_audience=AUDIENCE, events_service_account=PUSHER,
                         events_certs_url=fake.oidc.certs_url)
    yield made
    await made.close()


def execution(state: str, **extra: Any) -> dict[str, Any]:
    return {"name": NAME, "conditions": [{"type": "Completed", "state": state, **extra}],
            "template": {"containers": [{"name": "pushpool", "env": [
                {"name": "PUSHPOOL_RUN_ID", "value": "run-9"},
                {"name": "PUSHPOOL_RUN_ATTEMPT", "value": "1"}]}]}}


def pubsub(payload: Any) -> bytes:
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps({"message": {"data": data, "attributes": {"logging.googleapis.com/"
                                                                 "timestamp": "x"},
                                   "messageId": "1", "publishTime": "2026-12-02T10:00:00Z"},
                       "subscription": "projects/pushpool-test/subscriptions/pushpool"}).encode()


def audit_entry(response: dict[str, Any]) -> dict[str, Any]:
    return {"protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                             "serviceName": "run.googleapis.com",
                             "methodName": "google.cloud.run.v2.Jobs.RunJob",
                             "resourceName": response.get("name", NAME),
                             "response": response},
            "resource": {"type": "cloud_run_job"}, "logName": "projects/p/logs/x",
            "severity": "NOTICE"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def test_a_valid_token_delivers_the_execution_state(fake: FakeGoogle,
                                                          provider: CloudRunProvider) -> None:
    token = fake.oidc.key.token(audience=AUDIENCE, email=PUSHER)
    body = pubsub(audit_entry(execution("CONDITION_SUCCEEDED")))
    delivery = provider.parse_events(bearer(token), body, shared_secret=None)
    assert len(delivery.events) == 1
    event = delivery.events[0]
    assert (event.infra_id, event.run_id) == (NAME, "run-9")
    assert (event.status.phase, event.status.exit_code) == (InfraPhase.SUCCEEDED, 0)


@pytest.mark.parametrize("state", [
    ({"state": "CONDITION_FAILED", "executionReason": "CANCELLED"}, InfraPhase.CANCELLED),
    ({"state": "CONDITION_PENDING"}, InfraPhase.PENDING),
    ({"state": "CONDITION_FAILED", "executionReason": "NON_ZERO_EXIT_CODE"},
     InfraPhase.PENDING),  # the exit code is on the tasks: a read settles it
])
async def test_each_state_an_event_can_carry(fake: FakeGoogle, provider: CloudRunProvider,
                                             state: tuple[dict[str, Any], InfraPhase]) -> None:
    condition, phase = state
    token = fake.oidc.key.token(audience=AUDIENCE, email=PUSHER)
    body = pubsub(execution(condition.pop("state"), **condition))
    delivery = provider.parse_events(bearer(token), body, shared_secret=None)
    assert delivery.events[0].status.phase is phase


async def test_eventarc_and_v1_shapes(fake: FakeGoogle, provider: CloudRunProvider) -> None:
    token = fake.oidc.key.token(audience=AUDIENCE, email=PUSHER)
    running = execution("CONDITION_PENDING")
    running["runningCount"] = 1
    # Eventarc, Cloud Audit Logs trigger, binary mode: the entry is the body.
    headers = {**bearer(token), "ce-type": "google.cloud.audit.log.v1.written"}
    delivery = provider.parse_events(headers, json.dumps(audit_entry(running)).encode(),
                                     shared_secret=None)
    assert delivery.events[0].status.phase is InfraPhase.RUNNING
    # Structured mode CloudEvent around a Pub/Sub message with a v1 (Knative) Execution.
    v1 = {"kind": "Execution", "metadata": {"name": "j-abcde", "namespace": "pushpool-test",
                                           "labels": {"run.googleapis.com/job": "j",
                                                      "cloud.googleapis.com/location":
                                                      "us-central1"}},
          "status": {"conditions": [{"type": "Completed", "status": "True"}],
                     "succeededCount": 1}}
    envelope = json.loads(pubsub(v1))
    structured = {"specversion": "1.0", "type": "google.cloud.pubsub.topic.v1.messagePublished",
                  "data": envelope}
    delivery = provider.parse_events(bearer(token), json.dumps(structured).encode(),
                                     shared_secret=None)
    assert delivery.events[0].infra_id == NAME
    assert delivery.events[0].status.phase is InfraPhase.SUCCEEDED


async def test_a_delivery_about_something_else_holds_no_event(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    token = fake.oidc.key.token(audience=AUDIENCE, email=PUSHER)
    delivery = provider.parse_events(bearer(token), pubsub({"hello": "world"}),
                                     shared_secret=None)
    assert delivery.events == [] and delivery.note


@pytest.mark.parametrize("forge", ["other key", "audience", "email", "expired", "issuer",
                                   "garbage"])
async def test_a_forged_or_misaddressed_token_is_refused(fake: FakeGoogle,
                                                         provider: CloudRunProvider,
                                                         forge: str) -> None:
    key = fake.oidc.key
    if forge == "other key":
        forger = SigningKey()
        forger.kid = key.kid  # same key id, other private key: the signature fails
        token = forger.token(audience=AUDIENCE, email=PUSHER)
    elif forge == "audience":
        token = key.token(audience="https://elsewhere.example.com", email=PUSHER)
    elif forge == "email":
        token = key.token(audience=AUDIENCE, email="someone@evil.iam.gserviceaccount.com")
    elif forge == "expired":
        token = key.token(audience=AUDIENCE, email=PUSHER, lifetime=-3600)
    elif forge == "issuer":
        token = key.token(audience=AUDIENCE, email=PUSHER, issuer="https://evil.example.com")
    else:
        token = "not.a.jwt"
    with pytest.raises(EventAuthError):
        provider.parse_events(bearer(token), pubsub(execution("CONDITION_SUCCEEDED")),
                              shared_secret=None)


async def test_the_shared_secret_and_its_absence(fake: FakeGoogle) -> None:
    body = pubsub(execution("CONDITION_SUCCEEDED"))
    plain = make_provider()  # no OIDC audience configured
    try:
        with pytest.raises(EventsNotEnabled):
            plain.parse_events({}, body, shared_secret=None)
        delivery = plain.parse_events({SECRET_HEADER: "s3cret"}, body, shared_secret="s3cret")
        assert delivery.events[0].status.phase is InfraPhase.SUCCEEDED
        with pytest.raises(EventAuthError, match="wrong"):
            plain.parse_events({SECRET_HEADER: "guess"}, body, shared_secret="s3cret")
        with pytest.raises(EventAuthError):
            plain.parse_events({}, body, shared_secret="s3cret")
        token = fake.oidc.key.token(audience=AUDIENCE, email=PUSHER)
        with pytest.raises(EventAuthError, match="AUDIENCE"):
            plain.parse_events(bearer(token), body, shared_secret="s3cret")
    finally:
        await plain.close()


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"),
    (json.dumps({"message": {"attributes": {}}}).encode(), "message.data"),
    (json.dumps({"message": {"data": base64.b64encode(b"{nope").decode()}}).encode(),
     "message.data"),
])
async def test_a_malformed_delivery_is_refused_naming_the_field(
        fake: FakeGoogle, provider: CloudRunProvider, body: bytes, field: str) -> None:
    token = fake.oidc.key.token(audience=AUDIENCE, email=PUSHER)
    with pytest.raises(ValueError, match=field):
        provider.parse_events(bearer(token), body, shared_secret=None)
