"""Pushed execution changes: Pub/Sub push and Eventarc deliveries, and their authentication.

What arrives at ``POST /api/events/cloud-run``:

- a Pub/Sub push delivery, ``{"message": {"data": <base64>, "attributes", "messageId",
  "publishTime"}, "subscription"}``, whose data is a Cloud Logging entry routed by a log
  sink (the execution's audit or system entries) or an Execution's JSON;
- an Eventarc delivery: the same envelope (``google.cloud.pubsub.topic.v1.messagePublished``)
  or a Cloud Audit Logs entry as the body (``google.cloud.audit.log.v1.written``), in
  binary mode (``ce-*`` headers) or structured mode (``{"specversion", "data"}``).

From the entry the Execution is taken where it is (``protoPayload.response``,
``jsonPayload``, the data itself), in the v2 shape (``conditions[].state``) or the v1
Knative shape (``status.conditions[].status``), and mapped with ``status``. A final
success or cancellation settles the run; RUNNING is passed on; a failure becomes a PENDING
status (the dispatcher reads the execution at once, since the exit code lives on its
tasks, which no event carries). Polling stays the fallback for anything missed.

Authentication: the push subscription's OIDC token (``Authorization: Bearer``), verified
against Google's signing keys (``events_certs_url``, configurable so tests serve their
own) for the configured audience and, when set, the push service account's email; or
the shared secret in ``X-Pushpool-Events-Secret`` for senders that can set headers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from providers.base import (
    EventAuthError,
    EventDelivery,
    EventsNotEnabled,
    InfraEvent,
    InfraPhase,
    InfraStatus,
)
from providers.cloud_run.jobs import run_id_of
from providers.cloud_run.status import execution_status, needs_tasks

SECRET_HEADER = "X-Pushpool-Events-Secret"
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


@dataclass(frozen=True)
class EventAuth:
    """How deliveries are authenticated (``CloudRunSettings`` fills it)."""

    audience: str | None = None  # the push subscription's OIDC audience; None: no OIDC
    service_account: str | None = None  # the push identity's email, if it must match
    certs_url: str = GOOGLE_CERTS_URL


class TokenVerifier:
    """Verifies Google-signed OIDC tokens with PyJWT, the signing keys cached an hour
    (Google rotates them over days; a token with an unknown key id refetches them)."""

    def __init__(self, auth: EventAuth):
        self.auth = auth
        self._client: Any = None
        self._lock = threading.Lock()

    def _jwks(self) -> Any:
        with self._lock:
            if self._client is None:
                import jwt

                self._client = jwt.PyJWKClient(self.auth.certs_url, cache_keys=True,
                                               lifespan=3600, timeout=10)
            return self._client

    def verify(self, token: str) -> Mapping[str, Any]:
        import jwt

        try:
            key = self._jwks().get_signing_key_from_jwt(token)
            claims: Mapping[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=self.auth.audience,
                options={"require": ["exp", "iat", "iss", "aud"]}, leeway=30)
        except jwt.PyJWKClientConnectionError:
            raise EventAuthError("could not fetch the OIDC signing keys from "
                                 "events_certs_url; try again") from None
        except jwt.PyJWTError as exc:
            raise EventAuthError(f"the OIDC token does not verify: {exc}") from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise EventAuthError("the OIDC token was not issued by Google")
        wanted = self.auth.service_account
        if wanted:
            if claims.get("email") != wanted or claims.get("email_verified") is not True:
                raise EventAuthError("the OIDC token is not the push subscription's service "
                                     "account (PUSHPOOL_CLOUD_RUN_EVENTS_SERVICE_ACCOUNT)")
        return claims


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def authenticate(headers: Mapping[str, str], *, shared_secret: str | None,
                 verifier: TokenVerifier) -> None:
    oidc = verifier.auth.audience is not None
    if shared_secret is None and not oidc:
        raise EventsNotEnabled(
            "Cloud Run events are not enabled; set PUSHPOOL_CLOUD_RUN_EVENTS_AUDIENCE to the "
            "push subscription's OIDC audience, or PUSHPOOL_EVENTS_SECRET on the server and "
            f"send it in the {SECRET_HEADER} header")
    authorization = _header(headers, "Authorization")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        if not oidc:
            raise EventAuthError("an OIDC token was sent, but PUSHPOOL_CLOUD_RUN_EVENTS_AUDIENCE"
                                 " is not set, so it cannot be checked")
        verifier.verify(token.strip())
        return
    given = _header(headers, SECRET_HEADER)
    if shared_secret is not None and given:
        if hmac.compare_digest(given.encode(), shared_secret.encode()):
            return
        raise EventAuthError(f"wrong {SECRET_HEADER} header")
    raise EventAuthError("no OIDC token (Authorization: Bearer) and no "
                         f"{SECRET_HEADER} header")


# ---------------------------------------------------------------------------- bodies


def _json(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ValueError(f"{what}: not JSON; send the delivery as Google sends it") from None


def _unwrap(body: Any) -> Any:
    """The payload inside a structured CloudEvent or a Pub/Sub push envelope."""
    if isinstance(body, Mapping) and "specversion" in body and "data" in body:
        body = body["data"]
    if isinstance(body, Mapping) and isinstance(body.get("message"), Mapping):
        message = body["message"]
        data = message.get("data")
        if not data:
            raise ValueError("message.data: a Pub/Sub message without data")
        try:
            decoded = base64.b64decode(str(data), validate=False)
        except (binascii.Error, ValueError):
            raise ValueError("message.data: not base64") from None
        return _json(decoded, "message.data")
    return body


def _v1_to_v2(execution: Mapping[str, Any]) -> dict[str, Any]:
    """A Cloud Run Admin API v1 (Knative) Execution in the v2 shape ``status`` reads."""
    metadata = execution.get("metadata") or {}
    status = execution.get("status") or {}
    conditions = []
    for condition in status.get("conditions") or []:
        value = condition.get("status")
        state = {"True": "CONDITION_SUCCEEDED", "False": "CONDITION_FAILED"}.get(
            value, "CONDITION_PENDING")
        reason = str(condition.get("reason") or "")
        conditions.append({"type": condition.get("type"), "state": state,
                           "message": condition.get("message") or "",
                           "executionReason": "CANCELLED" if reason.lower() == "cancelled"
                           else ("NON_ZERO_EXIT_CODE" if reason == "NonZeroExitCode" else "")})
    name = str(metadata.get("name") or "")
    namespace = str(metadata.get("namespace") or "")
    labels = metadata.get("labels") or {}
    region = labels.get("cloud.googleapis.com/location", "")
    job = labels.get("run.googleapis.com/job", "")
    full = f"projects/{namespace}/locations/{region}/jobs/{job}/executions/{name}" \
        if namespace and region and job else name
    containers = (((execution.get("spec") or {}).get("template") or {}).get("spec") or {}
                  ).get("containers") or []
    return {"name": full, "conditions": conditions,
            "runningCount": status.get("runningCount", 0),
            "succeededCount": status.get("succeededCount", 0),
            "failedCount": status.get("failedCount", 0),
            "cancelledCount": status.get("cancelledCount", 0),
            "completionTime": status.get("completionTime"),
            "template": {"containers": containers}}


def execution_of(payload: Any) -> dict[str, Any] | None:
    """The Execution a log entry or message carries, in the v2 shape, else None."""
    if not isinstance(payload, Mapping):
        return None
    candidates: list[Any] = [payload]
    proto = payload.get("protoPayload")
    if isinstance(proto, Mapping):
        candidates += [proto.get("response"), proto.get("request")]
    candidates.append(payload.get("jsonPayload"))
    for item in candidates:
        if not isinstance(item, Mapping):
            continue
        if "/executions/" in str(item.get("name") or "") and "conditions" in item:
            return dict(item)
        if item.get("kind") == "Execution" and isinstance(item.get("status"), Mapping):
            return _v1_to_v2(item)
    return None


def event_of(payload: Any) -> InfraEvent | None:
    execution = execution_of(payload)
    if execution is None or "/executions/" not in str(execution.get("name")):
        return None
    name = str(execution["name"])
    status = execution_status(execution)
    if needs_tasks(execution):
        # The exit code is on the tasks, which no event carries: a read settles it.
        status = InfraStatus(InfraPhase.PENDING, None, "the execution failed; read its tasks")
    return InfraEvent(name, status, run_id_of(execution))


def parse_delivery(headers: Mapping[str, str], body: bytes, *, shared_secret: str | None,
                   verifier: TokenVerifier) -> EventDelivery:
    authenticate(headers, shared_secret=shared_secret, verifier=verifier)
    return parse_event(_json(body or b"null", "body"))


def parse_event(payload: Any) -> EventDelivery:
    """The executions in an already authenticated payload: a push body, a structured
    CloudEvent, or the ``data`` Eventarc hands a CloudEvent function (a Pub/Sub message or
    an audit-log entry)."""
    payload = _unwrap(payload)
    items = payload if isinstance(payload, list) else [payload]
    events = [e for e in (event_of(item) for item in items) if e is not None]
    return EventDelivery(events, note=None if events else "no Cloud Run execution in it")
