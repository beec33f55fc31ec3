"""What a tick answers: what it did (``TickSummary``), or that it cannot run on this store
(``TickRefused``), in a module of its own: the idle probe of a cloud function and
``pushpool tick`` answer with them without importing the engine or the store."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class TickRefused(Exception):
    """A tick cannot run against this store (SQLite, not allowed)."""


@dataclass
class TickSummary:
    """What one tick did: counts, and milliseconds per phase."""

    scheduled: int = 0  # runs the schedules materialised
    watch_passes: int = 0  # pages of active runs whose status and logs were read
    claimed: int = 0  # runs claimed, to be submitted (or ended by a policy)
    unfinished: int = 0  # claimed runs still submitting when time ran out
    complete: bool = True  # False: work is left for the next tick
    left: list[str] = field(default_factory=list)  # what was left, in words
    ms: dict[str, float] = field(default_factory=dict)  # per phase, and "total"
    idle: bool = False  # the idle probe found nothing to do: no pass ran

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for a log or a terminal."""
        if self.idle:
            return f"tick: nothing to do (idle probe, {self.ms.get('total', 0):.0f} ms)"
        text = (f"tick: {self.scheduled} scheduled, {self.claimed} claimed, "
                f"{self.watch_passes} watch pass(es) in {self.ms.get('total', 0):.0f} ms")
        if not self.complete:
            text += "; left for the next tick: " + "; ".join(self.left)
        return text
