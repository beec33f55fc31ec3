"""Key rotation (``pushpool secrets rotate-key``): a new key in, the old ones still read,
every sealed value sealed again under the new key in one resumable pass.

With ``PUSHPOOL_SECRET_KEY`` the new key is that setting and the old ones are
``PUSHPOOL_PREVIOUS_SECRET_KEYS`` (and a key file left in ``PUSHPOOL_HOME``, when moving
from one to the other). Without it the key file is rotated: a new key goes first in the
file, a running server picks it up at its next seal, and once every value is resealed the
file keeps the new key and the one before it (a server that sealed with that one just
before it noticed the change is still read). A pass that stopped half-way is resumed by
running the command again: it finds the new key first and not yet used for everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dispatcher import crypto
from dispatcher.crypto import SecretBox
from dispatcher.secret_keys import settings_box
from dispatcher.settings import Settings
from dispatcher.store import Database
from dispatcher.store.sealed import Resealed, reseal_all, rotation_done

KEPT_KEYS = 2  # the key file after a rotation: the new key and the one before it


@dataclass(frozen=True)
class Rotation:
    source: str  # "PUSHPOOL_SECRET_KEY" or the key file's path
    resumed: bool  # an earlier pass had stopped half-way
    resealed: Resealed


async def rotate_key(db: Database, settings: Settings,
                     progress: Callable[[str, int], None] | None = None) -> Rotation:
    home = settings.resolved_home()
    if settings.secret_key:
        box = settings_box(settings)
        if (home / crypto.KEY_FILE).exists():  # moving from the key file to the setting
            box = SecretBox((*box.keys, *crypto.read_key_file(home)))
        db.secrets = box
        done = await reseal_all(db, box, progress)
        return Rotation("PUSHPOOL_SECRET_KEY", False, done)
    keys = crypto.read_key_file(home)
    resumed = len(keys) > 1 and not await rotation_done(db, SecretBox(keys))
    if not resumed:
        keys = (crypto.new_key(), *keys)
        crypto.write_key_file(home, keys)
    box = settings_box(settings)  # the file's keys, then PUSHPOOL_PREVIOUS_SECRET_KEYS
    db.secrets = box
    done = await reseal_all(db, box, progress)
    crypto.write_key_file(home, keys[:KEPT_KEYS])
    return Rotation(str(home / crypto.KEY_FILE), resumed, done)
