"""Change notices between replicas sharing one PostgreSQL: LISTEN/NOTIFY on one channel.

A replica (or a tick) that created, cancelled or changed a run, or changed a schedule,
wakes its own loops and publishes the kind of change once its transaction has committed;
every other replica hears it and wakes the same loops, so a run created through replica A
is claimed at once by replica B when only B has room. A payload is the kinds of change and
the sender (``"runs,cancel host:pid:abc123"``); a replica ignores its own.

Publishing goes through the store's pool and is coalesced: while one NOTIFY is on its way,
further changes wait and go together in the next, so a burst of creations costs a few
notices, not one each. Listening holds one dedicated asyncpg connection per replica. When
that connection is lost, it is re-established with backoff and the outage is logged once;
notices sent meanwhile are lost, which the loops' timers cover, and on reconnecting every
loop is woken once to look at once. SQLite serves one process: nothing is sent or heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from dispatcher.engine.backoff import backoff_delay
from dispatcher.store import Database

log = logging.getLogger(__name__)

CHANNEL = "pushpool_changes"
LISTENER_NAME = "pushpool-listener"  # application_name: the connection in pg_stat_activity
KEEPALIVE_SECONDS = 5.0  # a silent listening connection is checked this often
KEEPALIVE_TIMEOUT_SECONDS = 5.0
RECONNECT_BASE_SECONDS = 0.2
RECONNECT_CAP_SECONDS = 5.0
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


class Change(StrEnum):
    """What changed, so a hearer wakes the loops that care."""

    RUNS = "runs"  # a run was created or became claimable, or a slot freed
    CANCEL = "cancel"  # a run was asked to cancel
    SCHEDULES = "schedules"  # a deployment's schedules or pause changed
    INFRA = "infra"  # a provider pushed news of a run's infrastructure


def payload(kinds: set[Change], sender: str) -> str:
    return f"{','.join(sorted(kinds))} {sender}"


def parse_payload(text_: str) -> tuple[set[Change], str]:
    """The kinds and the sender of a notice (unknown kinds, from a newer version, dropped)."""
    kinds, _, sender = text_.partition(" ")
    known = {k.value for k in Change}
    return {Change(k) for k in kinds.split(",") if k in known}, sender


def listen_dsn(url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy ``postgresql+asyncpg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Notices:
    """One replica's publishing and listening (see the module docstring). ``on_change``
    is called with each kind another replica reported."""

    def __init__(self, db: Database, sender: str, on_change: Callable[[Change], None]):
        self.db = db
        self.sender = sender
        self.on_change = on_change
        self.shared = db.dialect == "postgresql"
        self.listening = asyncio.Event()  # set while the listening connection is up
        self._pending: set[Change] = set()
        self._sending: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ publishing

    def publish(self, kind: Change) -> None:
        """Tell the other replicas (the change is committed). Never raises or waits."""
        if not self.shared:
            return
        self._pending.add(kind)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send(), name="notify-changes")

    async def _send(self) -> None:
        while self._pending:
            kinds, self._pending = self._pending, set()
            try:
                await self.db.run(_notify(payload(kinds, self.sender)))
            except Exception as exc:  # the others' timers cover it; the listener logs outages
                log.debug("could not notify other replicas (%s): %s", ",".join(kinds), exc)

    async def flush(self) -> None:
        """Wait for notices on their way (a tick, before it closes the store)."""
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)

    # ------------------------------------------------------------------ listening

    async def start(self) -> None:
        if self.shared:
            self._listener = asyncio.create_task(self._listen_loop(), name="listen-changes")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self.flush()

    def _heard(self, _conn: Any, _pid: int, _channel: str, text_: str) -> None:
        kinds, sender = parse_payload(text_)
        if sender == self.sender:
            return  # our own: already woken locally
        for kind in kinds:
            self.on_change(kind)

    async def _listen_loop(self) -> None:
        import asyncpg

        dsn = listen_dsn(self.db.url)
        failures = 0
        in_outage = False
        while True:
            try:
                conn = await asyncpg.connect(
                    dsn, timeout=KEEPALIVE_TIMEOUT_SECONDS,
                    server_settings={"application_name": LISTENER_NAME})
            except Exception as exc:
                if not in_outage:
                    log.warning("cannot listen for other replicas' changes (%s: %s); "
                                "retrying, timers cover what is missed",
                                type(exc).__name__, exc)
                    in_outage = True
                failures += 1
                await asyncio.sleep(backoff_delay(failures, base=RECONNECT_BASE_SECONDS,
                                                  cap=RECONNECT_CAP_SECONDS))
                continue
            try:
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(CHANNEL, self._heard)
                self.listening.set()
                if in_outage:
                    log.warning("listening for other replicas' changes again")
                    for kind in Change:  # what was missed meanwhile: look now
                        self.on_change(kind)
                failures, in_outage = 0, False
                await _until_lost(conn, lost)
            except Exception as exc:  # the connection went while being set up or checked
                log.debug("listening connection failed: %s", exc)
            finally:
                self.listening.clear()
                if not conn.is_closed():
                    conn.terminate()
            if not in_outage:
                log.warning("lost the connection that hears other replicas' changes; "
                            "reconnecting, timers cover what is missed")
                in_outage = True


def _notify(text_: str) -> Callable[[Connection], object]:
    return lambda conn: conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": text_})


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()


async def _until_lost(conn: Any, lost: asyncio.Event) -> None:
    """Return when the connection is gone: closed by the server, or not answering."""
    while not lost.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lost.wait(), timeout=KEEPALIVE_SECONDS)
            return
        await asyncio.wait_for(conn.fetchval("SELECT 1"), KEEPALIVE_TIMEOUT_SECONDS)
