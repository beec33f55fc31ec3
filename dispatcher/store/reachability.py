"""Whether an exception means "the database does not answer (yet)": the server waits for
such a database at start, the API answers 503 while it is gone, and the engine's loops log
one line per pass instead of a traceback."""

from __future__ import annotations

import logging
import sys

# SQLSTATEs of a database that is not answering yet: any connection exception (08...),
# shutting down or starting up (57P01-57P03), too many connections (53300).
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def store_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means the database does not answer (yet): a refused, reset or
    timed-out connection, or PostgreSQL starting up or shutting down. False for what waiting
    will not fix: a wrong password, a missing database, a failing migration."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) or getattr(current, "connection_invalidated", False):
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNREACHABLE_SQLSTATES):
            return True
        # SQLAlchemy wraps the driver's error in .orig; drivers chain theirs as causes.
        pending.extend(e for e in (getattr(current, "orig", None), current.__cause__,
                                   current.__context__) if isinstance(e, BaseException))
    return False


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """Inside ``except``: the traceback, or only one warning line when the database is
    away (a loop retrying through an outage would otherwise print one every pass)."""
    exc = sys.exc_info()[1]
    if exc is not None and store_unreachable(exc):
        logger.warning(f"{message} (the database does not answer: %s)", *args,
                       type(exc).__name__)
    else:
        logger.exception(message, *args)
