"""How a webhook delivery proves it comes from the sender that holds the hook's secret.

Three forms, chosen per webhook (README, "Webhooks"):

- ``pushpool``: ``X-Pushpool-Signature: sha256=<hex>``, the HMAC-SHA256 under the secret
  of ``<X-Pushpool-Timestamp>.<X-Pushpool-Delivery>.<raw body>``. The timestamp (Unix
  seconds) must be within five minutes of the server's clock, and the delivery id, being
  signed, is what replays are recognised by: a copy sent again is refused.
- ``github``: ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the body alone, as
  GitHub signs. With no time in it, a copy is recognised by the body's digest, kept for
  three days (as long as GitHub offers a delivery for redelivery).
- ``bearer``: ``Authorization: Bearer <secret>``; an ``X-Pushpool-Delivery`` id, when
  sent, is remembered against duplicates, but anyone who saw the secret can forge
  anything, so the signed forms are preferred.

Each check accepts any of the secrets given (the current one and, during a rotation's
grace period, the one before it) and compares in constant time. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dispatcher.webhooks.models import Scheme

SIGNATURE_HEADER = "X-Pushpool-Signature"
TIMESTAMP_HEADER = "X-Pushpool-Timestamp"
DELIVERY_HEADER = "X-Pushpool-Delivery"
GITHUB_SIGNATURE_HEADER = "X-Hub-Signature-256"
GITHUB_DELIVERY_HEADER = "X-GitHub-Delivery"

WINDOW = timedelta(minutes=5)
# A pushpool delivery's id is remembered while its timestamp can still be accepted.
REMEMBER_SIGNED = WINDOW + timedelta(minutes=1)
REMEMBER_UNTIMED = timedelta(days=3)
# No '.', so "<timestamp>.<delivery>.<body>" splits one way only.
DELIVERY_ID = re.compile(r"^[A-Za-z0-9_:-]{1,200}\Z")
TIMESTAMP = re.compile(r"^[0-9]{1,12}\Z")
HEX_DIGEST = re.compile(r"^sha256=([0-9a-fA-F]{64})\Z")


class SignatureRefused(Exception):
    """The delivery does not prove it holds the secret (or is stale); the message says
    what was wrong without saying anything about the secret."""


@dataclass(frozen=True)
class Verified:
    """What an authentic delivery carries besides its body."""

    delivery_id: str | None  # the sender's id for it (pushpool or GitHub header), if any
    replay_key: str | None  # remembered until ``remember_until`` so a copy is refused
    remember_until: datetime | None


def sign(secret: str, timestamp: int, delivery_id: str, body: bytes) -> str:
    """The ``X-Pushpool-Signature`` value a sender puts on a delivery."""
    return "sha256=" + _hmac(secret, f"{timestamp}.{delivery_id}.".encode() + body)


def sign_github(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub puts on a delivery."""
    return "sha256=" + _hmac(secret, body)


def verify(scheme: Scheme, headers: Mapping[str, str], body: bytes,
           secrets: Sequence[str], now: datetime) -> Verified:
    """The delivery's id and replay key, or ``SignatureRefused``."""
    if scheme == "pushpool":
        return _verify_pushpool(headers, body, secrets, now)
    if scheme == "github":
        return _verify_github(headers, body, secrets, now)
    return _verify_bearer(headers, secrets, now)


def _hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _required(headers: Mapping[str, str], name: str, pattern: re.Pattern[str],
              form: str) -> re.Match[str]:
    value = headers.get(name)
    if value is None:
        raise SignatureRefused(f"the {name} header is missing; this webhook takes {form}")
    match = pattern.match(value.strip())
    if match is None:
        raise SignatureRefused(f"the {name} header is malformed; this webhook takes {form}")
    return match


def _digest_matches(given_hex: str, secrets: Sequence[str], message: bytes) -> bool:
    given = given_hex.lower().encode()
    # Every secret is tried, so the time taken says nothing about which one matched.
    matches = [hmac.compare_digest(_hmac(s, message).encode(), given) for s in secrets]
    return any(matches)


PUSHPOOL_FORM = (f"{SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of "
                 f"'<timestamp>.<delivery id>.<body>'> with {TIMESTAMP_HEADER} and "
                 f"{DELIVERY_HEADER}")


def _verify_pushpool(headers: Mapping[str, str], body: bytes, secrets: Sequence[str],
                     now: datetime) -> Verified:
    signature = _required(headers, SIGNATURE_HEADER, HEX_DIGEST, PUSHPOOL_FORM).group(1)
    timestamp = _required(headers, TIMESTAMP_HEADER, TIMESTAMP,
                          f"{TIMESTAMP_HEADER}: <Unix time in seconds>").group(0)
    delivery = _required(headers, DELIVERY_HEADER, DELIVERY_ID,
                         f"{DELIVERY_HEADER}: 1-200 letters, digits, '_', ':' or '-'").group(0)
    message = f"{timestamp}.{delivery}.".encode() + body
    if not _digest_matches(signature, secrets, message):
        raise SignatureRefused(f"the {SIGNATURE_HEADER} does not match the body and this "
                               "webhook's secret; sign with the secret shown at its "
                               "creation or last rotation")
    # Checked after the signature, so an unsigned request learns nothing of the clock.
    skew = abs(now.timestamp() - int(timestamp))
    if skew > WINDOW.total_seconds():
        raise SignatureRefused(
            f"the {TIMESTAMP_HEADER} is {skew:.0f} s away from the server's clock, more "
            f"than {WINDOW.total_seconds():.0f} s; sign each delivery with the current "
            "time (and check the sender's clock)")
    sent = datetime.fromtimestamp(int(timestamp), tz=now.tzinfo)
    return Verified(delivery, f"id:{delivery}", max(sent, now) + REMEMBER_SIGNED)


def _verify_github(headers: Mapping[str, str], body: bytes, secrets: Sequence[str],
                   now: datetime) -> Verified:
    signature = _required(headers, GITHUB_SIGNATURE_HEADER, HEX_DIGEST,
                          f"GitHub's {GITHUB_SIGNATURE_HEADER}: sha256=<hex>").group(1)
    if not _digest_matches(signature, secrets, body):
        raise SignatureRefused(f"the {GITHUB_SIGNATURE_HEADER} does not match the body and "
                               "this webhook's secret; paste the secret shown at its "
                               "creation or last rotation into the sender's settings")
    delivery = headers.get(GITHUB_DELIVERY_HEADER)
    return Verified(delivery.strip()[:200] if delivery else None,
                    "body:" + hashlib.sha256(body).hexdigest(), now + REMEMBER_UNTIMED)


def _verify_bearer(headers: Mapping[str, str], secrets: Sequence[str],
                   now: datetime) -> Verified:
    given = headers.get("Authorization", "").strip()
    if given[:7].lower() != "bearer ":
        raise SignatureRefused("the Authorization header is missing; this webhook takes "
                               "'Authorization: Bearer <secret>'")
    token = given[7:].strip().encode()
    matches = [hmac.compare_digest(s.encode(), token) for s in secrets]
    if not any(matches):
        raise SignatureRefused("the bearer secret is not this webhook's; send the secret "
                               "shown at its creation or last rotation")
    delivery = headers.get(DELIVERY_HEADER)
    if delivery is None:
        return Verified(None, None, None)
    delivery = delivery.strip()
    if not DELIVERY_ID.match(delivery):
        raise SignatureRefused(f"the {DELIVERY_HEADER} header is malformed: use 1-200 "
                               "letters, digits, '_', ':' or '-'")
    return Verified(delivery, f"id:{delivery}", now + REMEMBER_UNTIMED)
