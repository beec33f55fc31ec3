"""The key a process seals stored secrets with, from its settings.

``PUSHPOOL_SECRET_KEY`` (and ``PUSHPOOL_PREVIOUS_SECRET_KEYS`` while a rotation is under
way) when set, else the key file in ``PUSHPOOL_HOME``. A server keeps running while
``pushpool secrets rotate-key`` replaces that file, so the box is looked up again whenever
the file changes: the server then seals with the new key at once.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatcher import crypto
from dispatcher.crypto import SecretBox
from dispatcher.settings import Settings


def settings_box(settings: Settings) -> SecretBox:
    passphrase = settings.secret_key.get_secret_value() if settings.secret_key else None
    previous = [p.get_secret_value() for p in settings.previous_secret_keys]
    return crypto.secret_box(settings.resolved_home(), passphrase, previous)


def live_box(settings: Settings) -> Callable[[], SecretBox]:
    """A function answering the current box: read again only when the key file changed
    (one stat a call; never, when the key comes from PUSHPOOL_SECRET_KEY)."""
    home = settings.resolved_home()
    if settings.secret_key:
        box = settings_box(settings)
        return lambda: box
    seen: list[tuple[tuple[int, int, int] | None, SecretBox]] = []

    def current() -> SecretBox:
        stamp = crypto.key_file_stamp(home)
        if not seen or seen[0][0] != stamp or stamp is None:
            box = settings_box(settings)
            seen[:] = [(crypto.key_file_stamp(home), box)]
        return seen[0][1]

    return current
