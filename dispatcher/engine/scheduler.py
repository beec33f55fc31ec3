"""The scheduler: keeps each active schedule materialised ahead as SCHEDULED runs.

Each pass computes, per schedule, the next slots within the horizon (at least
``scheduler_min_runs``, at most ``scheduler_max_runs``) and inserts one run per
deployment and slot; the slot key makes a second insert a no-op, so restarts and
concurrent replicas never duplicate a slot. Edits drop the not-yet-due runs (see
store.deployments) and wake this loop to remake them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from dispatcher import schedules, store, templates
from dispatcher.models import RunState
from dispatcher.settings import Settings
from dispatcher.store import Database, ScheduleTarget
from dispatcher.store.common import new_id, utcnow

log = logging.getLogger(__name__)


def slots_for(target: ScheduleTarget, now: datetime, settings: Settings) -> list[datetime]:
    horizon = now + timedelta(seconds=settings.scheduler_horizon_seconds)
    times = schedules.next_times(target.spec, now, count=settings.scheduler_max_runs,
                                 until=horizon)
    if len(times) < settings.scheduler_min_runs:
        times = schedules.next_times(target.spec, now, count=settings.scheduler_min_runs)
    return times


def run_rows(target: ScheduleTarget, slots: list[datetime], now: datetime
             ) -> list[dict[str, Any]]:
    try:
        _, rendered = templates.resolve_job(target.base_job_template, target.job_variables, {})
    except templates.TemplateError as exc:
        log.warning("deployment %s no longer fits its pool's template (%s); not scheduling",
                    target.deployment_name, exc)
        return []
    rows = []
    for slot in slots:
        run_id = new_id()
        rows.append({
            "id": run_id, "name": f"{target.deployment_name}-{slot:%Y%m%d-%H%M%S}",
            "deployment_id": target.deployment_id, "pool_id": target.pool_id,
            "queue_id": target.queue_id, "state": RunState.SCHEDULED.value,
            "state_message": "scheduled by its schedule", "scheduled_time": slot,
            "parameters": target.parameters, "job_variables": {},
            "job_configuration": rendered, "attempt": 0,
            "idempotency_key": store.schedule_slot_key(target.deployment_id, slot),
            "auto_scheduled": True, "created": now, "updated": now,
        })
    return rows


class Scheduler:
    def __init__(self, db: Database, settings: Settings, on_new_runs: Callable[[], None]):
        self.db = db
        self.settings = settings
        self.on_new_runs = on_new_runs
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="schedule-loop")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.schedule_once()
            except Exception:
                log.exception("materialising schedules failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       timeout=self.settings.scheduler_interval_seconds)

    async def schedule_once(self) -> int:
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for target in await store.active_schedules(self.db):
            rows.extend(run_rows(target, slots_for(target, now, self.settings), now))
        inserted = await store.insert_scheduled_runs(self.db, rows)
        if inserted:
            log.info("scheduled %d new run(s)", inserted)
            self.on_new_runs()
        return inserted
