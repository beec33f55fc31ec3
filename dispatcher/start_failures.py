"""Why `pushpool server start` could not start, said in one line with the way to fix it.

A server that cannot start (bad settings, a store it cannot open or write, a port it cannot
listen on) prints ``Error: <what is wrong>; <what to do>`` and exits non-zero: 2 when a
setting is wrong, 1 when the machine is in the way. No traceback: the ones SQLAlchemy
raises hold the statement and, in older set-ups, its parameters, such as a freshly made
signing key. The messages name files, hosts and ports, never a password (URLs are shown
with it hidden) nor any value a setting holds.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.engine import make_url

from dispatcher.redaction import redact_url

URL_FORMS = "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB"


@dataclass
class StartFailure(Exception):
    message: str
    exit_code: int = 1

    def __str__(self) -> str:
        return self.message


def bad_settings(exc: ValidationError) -> StartFailure:
    """Settings the environment got wrong: the first one, by its variable, without its value."""
    first = exc.errors(include_url=False, include_input=False)[0]
    name = "PUSHPOOL_" + "_".join(str(part) for part in first["loc"]).upper()
    return StartFailure(f"{name}: {first['msg']}; fix or unset it", 2)


def cannot_listen(exc: OSError, host: str, port: int) -> StartFailure:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return StartFailure(f"cannot listen on {where}: the port is already in use (another "
                            "pushpool server?); stop it, or pick another port with --port or "
                            "PUSHPOOL_PORT")
    return StartFailure(f"cannot listen on {where}: {exc.strerror or exc}; check --host and "
                        "--port (or PUSHPOOL_HOST and PUSHPOOL_PORT)")


def _driver_message(exc: BaseException) -> str:
    """The database's own words: the driver's error, first line, any URL's password hidden."""
    current: BaseException | None = exc
    while getattr(current, "orig", None) is not None:
        current = current.orig  # type: ignore[union-attr]
    text = str(current).strip().splitlines()[0] if str(current).strip() else ""
    return redact_url(text or type(current).__name__)


def store_failure(exc: BaseException, url: str) -> StartFailure:
    """The store at ``url`` could not be opened, migrated or written at start."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return StartFailure(f"PUSHPOOL_DATABASE_URL is not a database URL; use {URL_FORMS}", 2)
    backend = parsed.get_backend_name()
    if isinstance(exc, NoSuchModuleError | ModuleNotFoundError) or \
            backend not in ("sqlite", "postgresql"):
        return StartFailure(f"PUSHPOOL_DATABASE_URL names {parsed.drivername!r}, which "
                            f"pushpool cannot use; use {URL_FORMS}", 2)
    said = _driver_message(exc)
    if backend == "postgresql":
        shown = parsed.render_as_string(hide_password=True)
        return StartFailure(f"the PostgreSQL store at {shown} cannot be used: {said}; fix "
                            "PUSHPOOL_DATABASE_URL or the server")
    path = parsed.database or ""
    if isinstance(exc, OSError):
        return StartFailure(f"cannot make the store {path}: {exc.strerror or said}; set "
                            "PUSHPOOL_HOME (or PUSHPOOL_DATABASE_URL) to a folder you can write")
    lowered = said.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return StartFailure(f"the store {path} is read-only ({said}); make the file and its "
                            "folder writable, or set PUSHPOOL_HOME (or PUSHPOOL_DATABASE_URL) "
                            "to a writable place")
    if "locked" in lowered or "busy" in lowered:
        return StartFailure(f"the store {path} is locked by another process ({said}); stop "
                            "it (another server on the same PUSHPOOL_HOME?), or set "
                            "PUSHPOOL_HOME to another folder")
    return StartFailure(f"the store {path} cannot be used: {said}; check the file, or set "
                        "PUSHPOOL_HOME (or PUSHPOOL_DATABASE_URL) to another place")


__all__ = ["StartFailure", "bad_settings", "cannot_listen", "store_failure"]
