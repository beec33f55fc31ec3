"""Run tokens: what a run's runtime shows the API to report that run's state and logs.

A token names one run and an expiry time and carries an HMAC-SHA256 signature over both:
``pprt1.<run id>.<expires, unix seconds>.<signature, base64url>``. The server signs it when
it dispatches the run (``PUSHPOOL_RUN_TOKEN`` in the job's environment) and checks it on the
runtime routes in constant time. A token whose signature is wrong, or that has expired, is
a 401; a good token used for another run is a 403. Pure: no I/O, no clock but the caller's.

The signing key comes from ``PUSHPOOL_SECRET_KEY`` when it is set (derived, so the secret
itself signs nothing), else from a random secret kept in the database, so every replica
signs and checks with the same key (``dispatcher.store.runtime.run_token_key``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from dispatcher.errors import Forbidden, Unauthorized

PREFIX = "pprt1"
# How long a token outlives the run's timeout: time waiting for a container to start,
# plus the runtime's last reports. Runs without a timeout get DEFAULT_LIFETIME_SECONDS.
MARGIN_SECONDS = 15 * 60
DEFAULT_LIFETIME_SECONDS = 24 * 3600
_KEY_CONTEXT = b"pushpool run-token signing key v1"

EXPIRED_MESSAGE = "the run token has expired; only the run's own runtime may report, in time"
INVALID_MESSAGE = ("the run token is not valid; send the PUSHPOOL_RUN_TOKEN the run was "
                   "started with")


def key_from_secret(secret: str) -> bytes:
    """The signing key for a server secret (PUSHPOOL_SECRET_KEY or the stored one)."""
    return hmac.new(secret.encode(), _KEY_CONTEXT, hashlib.sha256).digest()


def expiry_for(timeout_seconds: float | None, now: float) -> int:
    """When a token for a run with this timeout (None: no timeout) stops being valid."""
    lifetime = DEFAULT_LIFETIME_SECONDS if not timeout_seconds else timeout_seconds
    return int(now + lifetime + MARGIN_SECONDS)


def _signature(key: bytes, run_id: str, expires: int) -> str:
    digest = hmac.new(key, f"{PREFIX}.{run_id}.{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint(key: bytes, run_id: str, expires: int) -> str:
    """A token for ``run_id`` valid until ``expires`` (unix seconds)."""
    if "." in run_id or not run_id:
        raise ValueError(f"run id {run_id!r} cannot be put in a token")
    return f"{PREFIX}.{run_id}.{expires}.{_signature(key, run_id, expires)}"


def looks_like_run_token(token: str) -> bool:
    return token.startswith(PREFIX + ".")


def verify(key: bytes, token: str, run_id: str, now: float) -> None:
    """Accept ``token`` for ``run_id`` or raise Unauthorized (bad, expired) / Forbidden."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or not parts[2].isdigit():
        raise Unauthorized(INVALID_MESSAGE)
    _, token_run, expires_text, signature = parts
    try:
        expected = _signature(key, token_run, int(expires_text))
        # compare_digest on the bytes: constant time whatever the attacker sent.
        valid = hmac.compare_digest(signature.encode("ascii"), expected.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        valid = False
    if not valid:
        raise Unauthorized(INVALID_MESSAGE)
    if int(expires_text) < now:
        raise Unauthorized(EXPIRED_MESSAGE)
    if not hmac.compare_digest(token_run.encode(), run_id.encode()):
        raise Forbidden(f"this run token belongs to another run, not to run {run_id!r}")
