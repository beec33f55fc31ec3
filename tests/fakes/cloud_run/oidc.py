"""Google-style OIDC signing for tests: an RSA key pair, its JWKS served by the fake at
``/oauth2/v3/certs`` (the shape of https://www.googleapis.com/oauth2/v3/certs), and
tokens shaped like the ones a Pub/Sub push subscription sends."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.fakes.cloud_run.server import Answer, FakeServer

CERTS_PATH = "/oauth2/v3/certs"


class SigningKey:
    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        data.update(kid=self.kid, use="sig", alg="RS256")
        return data

    def token(self, *, audience: str, email: str, issuer: str = "https://accounts.google.com",
              lifetime: int = 3600, **extra: Any) -> str:
        issued = int(time.time())
        claims = {"iss": issuer, "aud": audience, "azp": "1234567890", "email": email,
                  "email_verified": True, "sub": "1234567890", "iat": issued,
                  "exp": issued + lifetime, **extra}
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})


class Oidc:
    """The fake's signing key (made on first use: RSA key generation takes a moment)."""

    def __init__(self, server: FakeServer):
        self.server = server
        self._key: SigningKey | None = None
        server.route("GET", CERTS_PATH, "oauth2.certs", self._certs)

    @property
    def key(self) -> SigningKey:
        if self._key is None:
            self._key = SigningKey()
        return self._key

    @property
    def certs_url(self) -> str:
        return self.server.url + CERTS_PATH

    def _certs(self, m: Any, q: dict[str, list[str]], body: Any) -> Answer:
        return 200, {"keys": [self.key.jwk()]}
