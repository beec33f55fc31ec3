"""``pushpool secrets ...``: the key that seals stored secrets.

Unlike the other groups this one works on the store and the key itself, not through the
API: a rotation must be possible with no server running (cloud-function mode has none).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from dispatcher.cli.output import CliError, print_table, say

if TYPE_CHECKING:
    from dispatcher.operations.secrets import Rotation

secrets_app = typer.Typer(help="Manage the key that encrypts stored secrets.",
                          no_args_is_help=True, rich_markup_mode=None)


@secrets_app.command("rotate-key")
def rotate_key() -> None:
    """Seal every stored secret under a new key, the old one still read meanwhile.

    Without PUSHPOOL_SECRET_KEY: a new key goes first in PUSHPOOL_HOME/secret.key and a
    running server uses it at once. With it: set PUSHPOOL_SECRET_KEY to the new key and
    PUSHPOOL_PREVIOUS_SECRET_KEYS to the old ones (a JSON list) here and on every server,
    then run this. Safe to stop and run again: it goes on where it stopped.
    """
    from dispatcher.crypto import SecretDecryptError

    try:
        rotation = asyncio.run(_rotate())
    except SecretDecryptError as exc:
        raise CliError(str(exc), exit_code=1) from None
    how = "resumed; " if rotation.resumed else ""
    say(f"Key rotated ({how}new key from {rotation.source}).")
    print_table("Values sealed again", ["table", "rows"],
                [[name, str(count)] for name, count in rotation.resealed.resealed.items()])
    if rotation.source == "PUSHPOOL_SECRET_KEY":
        say("Every secret is sealed under PUSHPOOL_SECRET_KEY. Once every server runs\n"
            "with it, remove the old keys from PUSHPOOL_PREVIOUS_SECRET_KEYS.")


async def _rotate() -> Rotation:
    from dispatcher.operations.secrets import rotate_key as rotate
    from dispatcher.settings import get_settings
    from dispatcher.store import Database

    settings = get_settings()
    db = await Database.connect(settings.resolved_database_url())
    try:
        return await rotate(db, settings)
    finally:
        await db.close()
