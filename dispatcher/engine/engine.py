"""The engine: scheduler, dispatcher and watcher of one replica, wired together.

The API holds an ``Engine`` and calls ``wake()`` after any write that can make a run due
and ``notify_cancel()`` after a cancel, so nothing waits for a polling interval.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from dispatcher.engine.dispatch import Dispatcher
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
        self.dispatcher = Dispatcher(db, settings, self.owner, self._identity_env,
                                     on_submitted=self._on_submitted)
        self.watcher = Watcher(db, settings, is_in_flight=self.dispatcher.is_in_flight,
                               on_final=self.dispatcher.wake)
        self.scheduler = Scheduler(db, settings, on_new_runs=self.dispatcher.wake)

    def _identity_env(self, run: ClaimedRun) -> dict[str, str]:
        return {"PUSHPOOL_API_URL": self.api_url}

    def _on_submitted(self) -> None:
        self.watcher.wake()

    def wake(self) -> None:
        """Something changed: claim due runs now and re-check schedules."""
        self.dispatcher.wake()
        self.scheduler.wake()

    def notify_cancel(self, run_id: str) -> None:
        self.watcher.wake()

    async def start(self) -> None:
        log.info("engine %s starting", self.owner)
        await self.scheduler.start()
        await self.dispatcher.start()
        await self.watcher.start()

    async def stop(self) -> None:
        log.info("engine %s stopping", self.owner)
        await self.scheduler.stop()
        await self.dispatcher.stop()
        await self.watcher.stop()
