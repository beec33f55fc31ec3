"""Replica heartbeats: a restarted replica takes its earlier claims back at once, and the
claims of a replica that died come back to the others within the heartbeat timeout, not
after the 60 s lease (store/replicas.py holds the queries).

The passes are plain functions, for the server's loop here and for a one-shot caller (a
serverless tick): ``take_back`` when starting, ``beat`` every ``interval(timeout)``,
``retire`` when stopping cleanly. The loop frees other replicas' claims only once its own
heartbeats have gone through for a whole timeout: after a database outage every replica's
last heartbeat is old, and each gets that long to be heard from again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from dispatcher.store import Database
from dispatcher.store import replicas as store_replicas
from dispatcher.store.reachability import log_failure

log = logging.getLogger(__name__)


def interval(timeout_seconds: float) -> float:
    """How often to beat: four beats a timeout, so one late beat is not a death."""
    return timeout_seconds / 4


async def take_back(db: Database, owner: str, replica_id: str) -> int:
    """Register as a live replica; the runs this replica's earlier process held come back
    at once (it died, or stopped without handing them back). Returns how many."""
    freed = await store_replicas.register_replica(db, owner, replica_id)
    if freed.runs:
        log.warning("took back %d run(s) claimed by this replica's earlier process (%s)",
                    freed.runs, ", ".join(freed.owners))
    return freed.runs


async def beat(db: Database, owner: str, replica_id: str, timeout_seconds: float, *,
               free_dead: bool = True) -> int:
    """One heartbeat, then (``free_dead``) free the claims of replicas silent for longer
    than ``timeout_seconds``. Returns the runs freed."""
    if not await store_replicas.heartbeat(db, owner, replica_id):
        log.warning("this replica's heartbeat had lapsed past %gs and others took it for "
                    "dead; runs it was submitting may be resubmitted by them (the same "
                    "attempt, so no second job)", timeout_seconds)
    if not free_dead:
        return 0
    freed = await store_replicas.free_dead_replicas(db, owner, timeout_seconds)
    if freed.owners:
        log.warning("replica(s) %s sent no heartbeat for %gs: %d run(s) they had claimed "
                    "are resubmitted", ", ".join(freed.owners), timeout_seconds, freed.runs)
    return freed.runs


async def retire(db: Database, owner: str) -> int:
    """Stopping cleanly: what this replica still holds is claimable at once."""
    return await store_replicas.retire_replica(db, owner)


class Heartbeats:
    """The server's heartbeat loop. ``on_freed`` is called when runs came back."""

    def __init__(self, db: Database, owner: str, replica_id: str, timeout_seconds: float,
                 on_freed: Callable[[], None]):
        self.db = db
        self.owner = owner
        self.replica_id = replica_id
        self.timeout = timeout_seconds
        self.on_freed = on_freed
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take back this replica's earlier claims (before the dispatcher starts, so its
        first claim has them), then beat in the background."""
        if await take_back(self.db, self.owner, self.replica_id):
            self.on_freed()
        self._task = asyncio.create_task(self._loop(), name="heartbeat-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await retire(self.db, self.owner)
        except Exception:
            log_failure(log, "could not retire this replica; its claims come back when "
                             "its heartbeat is seen to stop")

    async def _loop(self) -> None:
        heard_since: float | None = time.monotonic()  # since when our beats go through
        while True:
            await asyncio.sleep(interval(self.timeout))
            try:
                now = time.monotonic()
                judging = heard_since is not None and now - heard_since >= self.timeout
                freed = await beat(self.db, self.owner, self.replica_id, self.timeout,
                                   free_dead=judging)
            except Exception:
                heard_since = None
                log_failure(log, "heartbeat failed; retrying")
                continue
            if heard_since is None:
                heard_since = time.monotonic()
            if freed:
                self.on_freed()
