"""Pushed provider events: one delivery from a cloud, parsed by its adapter, applied to
runs through the same state machine the watcher uses (polling stays the fallback)."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher import store
from dispatcher.engine.watcher import state_for
from dispatcher.errors import NotFound
from dispatcher.models import RunState
from dispatcher.store import Database
from dispatcher.store.runs import steps_to
from providers.base import InfraEvent


@dataclass(frozen=True)
class EventOutcome:
    applied: bool
    run_id: str | None = None
    state: RunState | None = None
    reason: str | None = None


async def apply_event(db: Database, event: InfraEvent) -> EventOutcome:
    """Move the event's run on if the event is about the run's own infrastructure and
    says something new; stale, foreign and out-of-order events change nothing."""
    run_id = event.run_id or await store.run_id_for_infra(db, event.infra_id)
    if run_id is None:
        return EventOutcome(False, reason="no run has this infrastructure")
    try:
        run = await store.get_run(db, run_id)
    except NotFound:
        return EventOutcome(False, run_id, reason="no such run")
    if run.infra_id not in (None, event.infra_id):
        return EventOutcome(False, run_id, run.state,
                            "the event is about another attempt's infrastructure")
    decided = state_for(event.status, run.state)
    if decided is None:  # nothing new, or out of order: the state machine only moves on
        return EventOutcome(False, run_id, run.state, "no change")
    state, message = decided
    fields = {"exit_code": event.status.exit_code} if event.status.exit_code is not None else {}
    moved = run_id in await store.apply_state_changes(db, steps_to(run_id, state, message,
                                                                   fields))
    return EventOutcome(moved, run_id, state if moved else run.state)
