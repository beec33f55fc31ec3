"""Encryption of secret values kept at rest (credentials, secret env values, webhook keys).

Values are sealed with ``cryptography``'s Fernet (AES-128-CBC with HMAC-SHA256) under a
key derived from ``PUSHPOOL_SECRET_KEY``, or, when that is unset, under a random key kept
in ``$PUSHPOOL_HOME/secret.key`` (created with mode 0600). A sealed value is text of the
form ``enc:v1:<token>`` so that it fits any JSON or text column and is told apart from a
value stored in clear by an older version. Several keys may be given at once, newest
first: values are sealed with the first and opened with any, which is how a key is
rotated without a window where old values cannot be read.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "enc:v1:"
KEY_FILE = "secret.key"


class SecretDecryptError(Exception):
    """A sealed value that none of the configured keys opens (a wrong or lost key)."""


def key_from_passphrase(passphrase: str) -> bytes:
    """A Fernet key from ``PUSHPOOL_SECRET_KEY`` (any text): derived, never used as is."""
    digest = hashlib.sha256(b"pushpool-at-rest\x00" + passphrase.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def load_or_create_key_file(home: Path) -> bytes:
    """The key in ``home/secret.key``, made with mode 0600 on first use."""
    path = home / KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


@dataclass(frozen=True)
class SecretBox:
    """Seals with the first key, opens with any of them."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("SecretBox needs at least one key")

    @property
    def _fernet(self) -> MultiFernet:
        return MultiFernet([Fernet(k) for k in self.keys])

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def open(self, stored: str) -> str:
        """The clear value of ``stored``; a value without the prefix is returned as is
        (it was written before encryption at rest, and is sealed by the migration)."""
        if not is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise SecretDecryptError(
                "a stored secret cannot be decrypted with the configured key: set "
                "PUSHPOOL_SECRET_KEY (or restore secret.key in PUSHPOOL_HOME) to the key "
                "it was stored with") from None

    def reseal(self, stored: str) -> str:
        """``stored`` sealed again under the first key (for key rotation)."""
        return self.seal(self.open(stored))


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def secret_box(home: Path, passphrase: str | None = None,
               previous: Sequence[str] = ()) -> SecretBox:
    """The box a server uses: ``PUSHPOOL_SECRET_KEY`` when set, else the key file; older
    passphrases in ``previous`` still open what they sealed."""
    first = key_from_passphrase(passphrase) if passphrase else load_or_create_key_file(home)
    return SecretBox((first, *(key_from_passphrase(p) for p in previous)))
