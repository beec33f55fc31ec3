"""Fills ``Run.display_state`` (LATE for a SCHEDULED run past its pool's threshold)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dispatcher import store
from dispatcher.errors import NotFound
from dispatcher.models import Run, RunState, WorkPool, display_state

if TYPE_CHECKING:
    from dispatcher.store.db import Database

DEFAULT_LATE_AFTER_SECONDS = WorkPool.model_fields["late_after_seconds"].default


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def with_display_state(db: Database, runs: list[Run],
                             now: datetime | None = None) -> list[Run]:
    """The runs with ``display_state`` set where the store left it None."""
    now = now or datetime.now(UTC)
    # Only SCHEDULED runs can be LATE, so only their pools need reading.
    pool_names = {run.pool_name for run in runs
                  if run.display_state is None and run.state is RunState.SCHEDULED}
    thresholds: dict[str, float] = {}
    for name in pool_names:
        try:
            thresholds[name] = (await store.get_pool(db, name)).late_after_seconds
        except NotFound:  # the pool went away under us; use the default threshold
            thresholds[name] = DEFAULT_LATE_AFTER_SECONDS
    filled = []
    for run in runs:
        if run.display_state is None:
            late_after = thresholds.get(run.pool_name, DEFAULT_LATE_AFTER_SECONDS)
            shown = display_state(run.state, _aware(run.scheduled_time), now, late_after)
            run = run.model_copy(update={"display_state": shown})
        filled.append(run)
    return filled
