"""The engine: scheduler, dispatcher and watcher of one replica, wired together.

The API holds an ``Engine`` and calls ``wake()`` after any write that can make a run due
and ``notify_cancel()`` after a cancel, so nothing waits for a polling interval. Each such
change, and the engine's own (new scheduled runs, a run ended, claims freed), wakes this
replica's loops and is published to the others sharing a PostgreSQL store, which wake the
same loops on hearing it (engine/notifications.py): one mapping from a change to the loops
it wakes serves both.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from dispatcher import run_tokens, store
from dispatcher.engine.dispatch import Dispatcher
from dispatcher.engine.heartbeat import Heartbeats
from dispatcher.engine.notifications import Change, Notices
from dispatcher.engine.replica_id import replica_identity
from dispatcher.engine.scheduler import Scheduler
from dispatcher.engine.watcher import Watcher
from dispatcher.settings import Settings
from dispatcher.store import ClaimedRun, Database

log = logging.getLogger(__name__)


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Engine:
    def __init__(self, db: Database, settings: Settings, api_url: str | None = None):
        self.db = db
        self.settings = settings
        self.owner = replica_name()
        self.api_url = api_url or settings.api_url
        self.notices = Notices(db, self.owner, on_change=self._woken)
        self.dispatcher = Dispatcher(db, settings, self.owner, self._identity_env,
                                     on_cancel_requested=lambda: self.watcher.wake())
        self.watcher = Watcher(db, settings, is_in_flight=self.dispatcher.is_in_flight,
                               on_final=self._runs_changed)
        self.scheduler = Scheduler(db, settings, on_new_runs=self._runs_changed)
        self.identity = replica_identity(settings.resolved_home(), settings.replica_id)
        self.heartbeats = Heartbeats(db, self.owner, self.identity.replica_id,
                                     settings.heartbeat_timeout_seconds,
                                     on_freed=self._runs_changed)
        self._run_token_key: bytes | None = None  # read in start()

    def _identity_env(self, run: ClaimedRun, timeout: int | None) -> dict[str, str]:
        env = {"PUSHPOOL_API_URL": self.api_url}
        if self._run_token_key is not None:
            # Valid for this run alone, until its timeout (plus a margin) has passed.
            expires = run_tokens.expiry_for(timeout, time.time())
            env["PUSHPOOL_RUN_TOKEN"] = run_tokens.mint(self._run_token_key, run.run_id,
                                                        expires)
        return env

    def _woken(self, change: Change) -> None:
        """Wake the loops that ``change`` concerns, whichever replica made it."""
        if change in (Change.RUNS, Change.INFRA):
            self.dispatcher.wake()  # a run may be due, or a slot freed: claim now
        if change in (Change.CANCEL, Change.INFRA):
            self.watcher.wake()  # stop a cancelled run's job, read pushed statuses now
        if change is Change.SCHEDULES:
            self.scheduler.wake()

    def _changed(self, change: Change) -> None:
        """This replica committed ``change``: its own loops and the others' look now."""
        self._woken(change)
        self.notices.publish(change)

    def _runs_changed(self) -> None:
        """New scheduled runs, a run ended (a slot freed), claims freed."""
        self._changed(Change.RUNS)

    def wake(self) -> None:
        """A run may have become due (or a slot freed): claim now."""
        self._changed(Change.RUNS)

    def schedules_changed(self) -> None:
        self._changed(Change.SCHEDULES)

    def infra_changed(self) -> None:
        """A provider pushed news of a run's infrastructure: claim (a slot may have
        freed) and read statuses now rather than at the next poll."""
        self._changed(Change.INFRA)

    def notify_cancel(self, run_id: str) -> None:
        self._changed(Change.CANCEL)

    async def start(self) -> None:
        log.info("engine %s (replica %s) starting", self.owner, self.identity.replica_id)
        await self.load_run_token_key()
        await self.notices.start()
        await self.heartbeats.start()
        await self.scheduler.start()
        if self.settings.dispatch_enabled:
            await self.dispatcher.start()
        else:
            log.info("dispatching is off on this replica (PUSHPOOL_DISPATCH_ENABLED=false): "
                     "other replicas submit the runs it takes in")
        await self.watcher.start()

    async def load_run_token_key(self) -> None:
        """Read the key that signs run tokens (start() does; a serverless tick too)."""
        secret = self.settings.secret_key
        self._run_token_key = await store.run_token_key(
            self.db, secret.get_secret_value() if secret else None)

    async def stop(self) -> None:
        log.info("engine %s stopping", self.owner)
        await self.scheduler.stop()
        await self.dispatcher.stop()
        await self.watcher.stop()
        await self.heartbeats.stop()  # what is still claimed is claimable at once
        await self.notices.stop()
        self.identity.release()
