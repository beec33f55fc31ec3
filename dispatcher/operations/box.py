"""The server's secret box: what seals and opens values kept at rest, from the settings.

``PUSHPOOL_SECRET_KEY`` when it is set (an empty value counts as unset), else the key
file in ``PUSHPOOL_HOME`` (dispatcher/crypto.py). Built once per key and home.
"""

from __future__ import annotations

import functools
from pathlib import Path

from dispatcher.crypto import SecretBox, secret_box
from dispatcher.settings import Settings


def server_box(settings: Settings) -> SecretBox:
    passphrase = settings.secret_key.get_secret_value() if settings.secret_key else ""
    return _box(settings.resolved_home(), passphrase or None)


@functools.lru_cache(maxsize=8)
def _box(home: Path, passphrase: str | None) -> SecretBox:
    return secret_box(home, passphrase)
