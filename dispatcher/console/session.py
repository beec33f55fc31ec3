"""Console sign-in: a stateless session cookie and the CSRF token that goes with it.

With ``PUSHPOOL_API_TOKEN`` set, signing in with the token gives a cookie holding an
expiry and an HMAC of it under a key derived from the token, so every replica checks it
without shared state and changing the token signs everyone out. Requests that change
something and are authenticated by the cookie must also carry the CSRF token (a second
HMAC over the cookie) in ``X-CSRF-Token``; pages put it in a ``<meta>`` tag for the
console's script. The cookie is HttpOnly and SameSite=Strict, so it is neither readable
by scripts nor sent by other sites.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from aiohttp import web

COOKIE = "pushpool_session"
CSRF_HEADER = "X-CSRF-Token"
LIFETIME_SECONDS = 12 * 3600


def _key(token: str, purpose: bytes) -> bytes:
    return hmac.new(token.encode(), b"pushpool-console\x00" + purpose, hashlib.sha256).digest()


def _mac(token: str, purpose: bytes, message: str) -> str:
    return hmac.new(_key(token, purpose), message.encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + LIFETIME_SECONDS)
    return f"{expires}.{_mac(token, b'session', str(expires))}"


def session_valid(token: str, value: str | None, now: float | None = None) -> bool:
    if not value or "." not in value:
        return False
    expires, _, mac = value.partition(".")
    if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(mac, _mac(token, b"session", expires))


def csrf_for(token: str, session: str) -> str:
    return _mac(token, b"csrf", session)


def csrf_valid(token: str, session: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(given or "", csrf_for(token, session))


def signed_in(request: web.Request, token: str) -> bool:
    return session_valid(token, request.cookies.get(COOKIE))


def set_session_cookie(response: web.StreamResponse, session: str, secure: bool) -> None:
    response.set_cookie(COOKIE, session, max_age=LIFETIME_SECONDS, path="/", httponly=True,
                        samesite="Strict", secure=secure)


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")
