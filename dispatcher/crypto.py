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


def _keys_in(text: bytes) -> tuple[bytes, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def load_or_create_key_file(home: Path) -> bytes:
    """The newest key in ``home/secret.key``, made with mode 0600 on first use."""
    return read_key_file(home)[0]


def read_key_file(home: Path) -> tuple[bytes, ...]:
    """Every key in ``home/secret.key``, newest first; the file is made (mode 0600, one
    new key) if there is none."""
    path = home / KEY_FILE
    try:
        keys = _keys_in(path.read_bytes())
    except FileNotFoundError:
        keys = ()
    if keys:
        return keys
    home.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _keys_in(path.read_bytes()) or (key,)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return (key,)


def write_key_file(home: Path, keys: Sequence[bytes]) -> None:
    """Replace ``home/secret.key`` with ``keys`` (newest first) in one rename, mode 0600,
    so a reader sees the old file or the new one, never half of one."""
    if not keys:
        raise ValueError("the key file needs at least one key")
    home.mkdir(parents=True, exist_ok=True)
    temporary = home / f".{KEY_FILE}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"".join(k + b"\n" for k in keys))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, home / KEY_FILE)


def new_key() -> bytes:
    return Fernet.generate_key()


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

    def sealed_with_first(self, stored: str) -> bool:
        """Whether ``stored`` is sealed under the first key (a rotation may skip it)."""
        if not is_sealed(stored):
            return False
        try:
            Fernet(self.keys[0]).decrypt(stored[len(PREFIX):].encode("ascii"))
        except (InvalidToken, ValueError):
            return False
        return True


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def secret_box(home: Path, passphrase: str | None = None,
               previous: Sequence[str] = ()) -> SecretBox:
    """The box a server uses: ``PUSHPOOL_SECRET_KEY`` when set, else the key file; older
    passphrases in ``previous`` still open what they sealed."""
    older = tuple(key_from_passphrase(p) for p in previous)
    if passphrase:
        return SecretBox((key_from_passphrase(passphrase), *older))
    return SecretBox((*read_key_file(home), *older))


def key_file_stamp(home: Path) -> tuple[int, int, int] | None:
    """What changes when the key file is replaced (None: there is none), so a long-lived
    process can pick up a key that ``rotate-key`` wrote without a restart."""
    try:
        st = (home / KEY_FILE).stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
