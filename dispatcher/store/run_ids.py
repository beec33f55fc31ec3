"""A run named by its id or by the first characters of it, as `pushpool run ls` shows them.

Run ids are UUIDs (``store.common.new_id``). A prefix is turned into the range of ids it
covers, lowest to highest, and read along the primary key, so resolving one costs a
short index walk however many runs are stored. Every id has its dashes in the same
places, so the range holds the same ids under any collation.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from dispatcher.display import SHORT_ID_LENGTH
from dispatcher.errors import InvalidInput, NotFound
from dispatcher.store.db import Database
from dispatcher.store.tables import runs

ID_SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
HEX_DIGITS = frozenset("0123456789abcdef")
MIN_PREFIX = 4  # hex digits; fewer would match most runs of a busy store
SHOWN_MATCHES = 3
# What ``id_range`` takes, as a JSON Schema pattern for the API's documentation.
RUN_REF_PATTERN = rf"^-*([0-9A-Fa-f]-*){{{MIN_PREFIX},32}}$"
FIX = (f"give the run's id or its first {SHORT_ID_LENGTH} characters, as `pushpool run ls` "
       "shows them")


def id_range(ref: str) -> tuple[str, str]:
    """The lowest and highest run id starting with ``ref`` (dashes optional, any case)."""
    digits = ref.strip().lower().replace("-", "")
    if not MIN_PREFIX <= len(digits) <= ID_SHAPE.count("x") or not set(digits) <= HEX_DIGITS:
        raise InvalidInput("id", f"{ref[:60]!r} is not a valid run id", FIX)
    low, high, taken = [], [], 0
    for mark in ID_SHAPE:
        if mark == "-":
            low.append("-")
            high.append("-")
            continue
        digit = digits[taken] if taken < len(digits) else None
        taken += 1
        low.append(digit or "0")
        high.append(digit or "f")
    return "".join(low), "".join(high)


def resolve_in(conn: Connection, ref: str) -> str:
    """The one run id ``ref`` names; NotFound for none, InvalidInput when it is ambiguous."""
    low, high = id_range(ref)
    if low == high:  # a whole id: whatever reads the run says when there is none
        return low
    found = list(conn.execute(select(runs.c.id).where(runs.c.id.between(low, high))
                              .order_by(runs.c.id).limit(SHOWN_MATCHES + 1)).scalars())
    if not found:
        raise NotFound(f"no run id starts with {ref!r}; list runs with `pushpool run ls`")
    if len(found) > 1:
        many = ", ".join(found[:SHOWN_MATCHES]) + (", ..." if len(found) > SHOWN_MATCHES
                                                   else "")
        raise InvalidInput("id", f"{ref!r} is the start of more than one run id ({many})",
                           "give more of the id")
    return str(found[0])


async def resolve_run_id(db: Database, ref: str) -> str:
    """The full id of the run ``ref`` names (a whole id or its first characters)."""
    low, high = id_range(ref)
    if low == high:
        return low  # no read: the caller's own read of the run answers a 404
    return await db.run(lambda conn: resolve_in(conn, ref))
