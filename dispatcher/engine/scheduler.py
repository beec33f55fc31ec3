"""The scheduler: keeps each active schedule materialised ahead as SCHEDULED runs.

A schedule's target at time ``now`` is its next slots after ``now`` within the horizon, at
most ``scheduler_max_runs`` of them, or its next ``scheduler_min_runs`` slots if the horizon
holds fewer. Each schedule remembers the last slot stored for it (``materialised_until``),
so a pass stores only the target slots after that one and advances it in the same
transaction: a pass over a thousand one-minute crons makes about a thousand runs, not the
whole horizon again. Edits and pauses reset it (see store.deployments) and wake this loop
to remake the slots; the slot key makes a second insert of a slot a no-op, so restarts and
concurrent replicas never duplicate one.

A pass pages through the schedules by id: first those materialised to the horizon or
beyond, which need work only when fewer than ``scheduler_min_runs`` slots lie ahead, then
those whose slots end before it (or that have none; the first group, once extended, may
join these). Slot math and job rendering run in a worker thread,
computed once per distinct spec and per pool and job variables, so the event loop stays free
for the API and the dispatcher, and memory stays bounded by the page size.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dispatcher import schedules, sealing, store, templates
from dispatcher.crypto import SecretBox
from dispatcher.models import RunState, ScheduleSpec
from dispatcher.settings import Settings
from dispatcher.store import Database, ScheduleTarget
from dispatcher.store.common import new_id, utcnow
from dispatcher.store.reachability import log_failure
from dispatcher.store.scheduled_runs import (
    DeploymentFields,
    NewSlots,
    ScheduleMark,
    deployment_fields,
    pool_templates,
    schedule_marks,
    store_new_slots,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # schedules read per query
# New runs stored per write transaction (whole schedules): on SQLite the transaction holds
# the only writer, so claims due meanwhile wait at most about this many inserts.
ROWS_PER_TRANSACTION = 1000
_TARGETS_KEPT = 4096  # distinct specs whose target slots a pass keeps computed


def target_slots(spec: ScheduleSpec, now: datetime, settings: Settings) -> list[datetime]:
    """The slots a schedule should have runs for at ``now`` (see the module docstring)."""
    horizon = now + timedelta(seconds=settings.scheduler_horizon_seconds)
    times = schedules.next_times(spec, now, count=settings.scheduler_max_runs, until=horizon)
    if len(times) < settings.scheduler_min_runs:
        times = schedules.next_times(spec, now, count=settings.scheduler_min_runs)
    return times


class SlotPlan:
    """One pass's clock and each distinct spec's target slots, computed once per pass."""

    def __init__(self, now: datetime, settings: Settings):
        self.now = now
        self.settings = settings
        self.horizon_end = now + timedelta(seconds=settings.scheduler_horizon_seconds)
        self._targets: OrderedDict[str, list[datetime]] = OrderedDict()

    def new_slots(self, stored_spec: dict[str, Any], materialised_until: datetime | None
                  ) -> list[datetime]:
        """The target slots after the last one already stored."""
        targets = self._targets_of(schedules.spec_key(stored_spec))
        if materialised_until is None:
            return targets
        return targets[bisect.bisect_right(targets, materialised_until):]

    def _targets_of(self, key: str) -> list[datetime]:
        targets = self._targets.get(key)
        if targets is not None:
            self._targets.move_to_end(key)
            return targets
        try:
            targets = target_slots(schedules.parse_spec(key), self.now, self.settings)
        except ValueError as exc:  # stored before a rule tightened, or a zone went away
            log.warning("schedule %s cannot be scheduled: %s", key, exc)
            targets = []
        self._targets[key] = targets
        if len(self._targets) > _TARGETS_KEPT:
            self._targets.popitem(last=False)
        return targets


def render_job(target: ScheduleTarget, box: SecretBox | None = None) -> dict[str, Any] | None:
    """The deployment's job configuration, or None (logged) if it no longer fits its pool.
    With ``box``, the stored secrets are opened to render and the result sealed again."""
    template, job_variables = target.base_job_template, target.job_variables
    if box is not None:
        template = sealing.open_json(template, box)
        job_variables = sealing.open_json(job_variables, box)
    try:
        merged, rendered = templates.resolve_job(template, job_variables, {})
    except templates.TemplateError as exc:
        log.warning("deployment %s no longer fits its pool's template (%s); not scheduling",
                    target.deployment_name, exc)
        return None
    if box is None:
        return rendered
    return sealing.seal_job_configuration(rendered, merged, template.get("variables", {}),
                                          sealing.sealer(box))


def run_rows(target: ScheduleTarget, slots: list[datetime], now: datetime,
             rendered: dict[str, Any] | None = None,
             box: SecretBox | None = None) -> list[dict[str, Any]]:
    """The runs table rows for ``slots`` (``rendered``: the job configuration, if known;
    ``box``: the store's, when the target holds sealed secrets)."""
    if rendered is None:
        rendered = render_job(target, box)
        if rendered is None:
            return []
    return [{
        "id": new_id(), "name": f"{target.deployment_name}-{slot:%Y%m%d-%H%M%S}",
        "deployment_id": target.deployment_id, "pool_id": target.pool_id,
        "queue_id": target.queue_id, "state": RunState.SCHEDULED.value,
        "state_message": "scheduled by its schedule", "scheduled_time": slot,
        "parameters": target.parameters, "job_variables": {},
        "job_configuration": rendered, "attempt": 0,
        "idempotency_key": store.schedule_slot_key(target.deployment_id, slot),
        "auto_scheduled": True, "created": now, "updated": now,
    } for slot in slots]


def _slots_of_page(plan: SlotPlan, marks: list[ScheduleMark]
                   ) -> list[tuple[ScheduleMark, list[datetime]]]:
    found = [(mark, plan.new_slots(mark.spec, mark.materialised_until)) for mark in marks]
    return [(mark, slots) for mark, slots in found if slots]


@dataclass(frozen=True)
class _Planned:
    """A schedule's new slots, its deployment and its rendered job, before the rows exist."""

    mark: ScheduleMark
    target: ScheduleTarget
    slots: list[datetime]
    job: dict[str, Any]


def _plan_page(work: list[tuple[ScheduleMark, list[datetime]]],
               fields: dict[str, DeploymentFields], pools: dict[str, dict[str, Any]],
               box: SecretBox) -> list[_Planned]:
    """Each schedule's target and job, rendering each pool and job variables pair once."""
    rendered: dict[tuple[str, str], dict[str, Any] | None] = {}
    planned = []
    for mark, slots in work:
        deployment = fields.get(mark.deployment_id)
        template = pools.get(deployment.pool_id) if deployment else None
        if deployment is None or template is None:
            continue  # deleted since the page was read
        target = ScheduleTarget(
            mark.schedule_id, schedules.parse_spec(schedules.spec_key(mark.spec)),
            mark.deployment_id, deployment.name, deployment.pool_id, deployment.queue_id,
            deployment.parameters, deployment.job_variables, template)
        key = (deployment.pool_id, json.dumps(deployment.job_variables, sort_keys=True))
        if key not in rendered:
            rendered[key] = render_job(target, box)
        job = rendered[key]
        if job is not None:  # else no runs, and materialised_until stays: retried next pass
            planned.append(_Planned(mark, target, slots, job))
    return planned


def _transactions(planned: list[_Planned]) -> list[list[_Planned]]:
    """Whole schedules, at most about ROWS_PER_TRANSACTION runs per transaction."""
    groups: list[list[_Planned]] = [[]]
    rows = 0
    for item in planned:
        if groups[-1] and rows + len(item.slots) > ROWS_PER_TRANSACTION:
            groups.append([])
            rows = 0
        groups[-1].append(item)
        rows += len(item.slots)
    return [g for g in groups if g]


def _new_slots(group: list[_Planned], now: datetime) -> list[NewSlots]:
    return [NewSlots(p.mark.schedule_id, p.mark.materialised_until, p.slots[-1],
                     run_rows(p.target, p.slots, now, p.job)) for p in group]


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
                log_failure(log, "materialising schedules failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       timeout=self.settings.scheduler_interval_seconds)

    async def schedule_once(self, now: datetime | None = None) -> int:
        """One pass at ``now`` (default: the current time); returns the runs inserted."""
        plan = SlotPlan(now or utcnow(), self.settings)
        pools = await pool_templates(self.db)
        inserted = 0
        # Those beyond the horizon first: the others, once extended, may join them.
        for within_horizon in (False, True):
            after = ""
            while True:
                marks = await schedule_marks(self.db, after, PAGE_SIZE, plan.horizon_end,
                                             within_horizon=within_horizon)
                if not marks:
                    break
                after = marks[-1].schedule_id
                page_inserted = await self._extend(plan, marks, pools)
                if page_inserted:
                    inserted += page_inserted
                    self.on_new_runs()  # the dispatcher can claim this page's runs already
        if inserted:
            log.info("scheduled %d new run(s)", inserted)
        return inserted

    async def _extend(self, plan: SlotPlan, marks: list[ScheduleMark],
                      pools: dict[str, dict[str, Any]]) -> int:
        work = await asyncio.to_thread(_slots_of_page, plan, marks)
        if not work:
            return 0
        fields = await deployment_fields(self.db, (mark.deployment_id for mark, _ in work))
        planned = await asyncio.to_thread(_plan_page, work, fields, pools,
                                            self.db.secrets)
        inserted = 0
        for group in _transactions(planned):  # rows made per transaction: memory stays low
            batch = await asyncio.to_thread(_new_slots, group, plan.now)
            inserted += await store_new_slots(self.db, batch)
        return inserted
