"""A tick: one bounded pass of the engine, for a cloud function's timer or a VM's cron.

A tick materialises due schedule slots, reads the status and new logs of active runs, then
claims due runs and submits them; missed-run policies, expired leases and circuit-breaker
probes are applied inside the claim transaction, as in the server. It is built on the
engine's one-shot methods (``Scheduler.schedule_once``, ``Watcher.watch_once``,
``Dispatcher.claim_once`` and ``stop``), so a tick and a server follow the same rules and
may share one PostgreSQL store at once.

Each phase starts only while time is left, and a submit is given at most a quarter of
the tick, so the pass ends within ``max_seconds``: at the end, submits in flight finish or
time out, their records are written, and claims whose submit never began are handed back
at once. What the tick did not reach is left for the next one, and its summary says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from dispatcher.engine.engine import Engine
from dispatcher.engine.tick_summary import TickRefused, TickSummary
from dispatcher.settings import Settings
from dispatcher.store import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

SUBMIT_SHARE = 0.25  # of a tick's time, the most one submit call may take
MIN_SUBMIT_SECONDS = 0.05
ALLOW_SQLITE_HINT = ("use PostgreSQL (PUSHPOOL_DATABASE_URL=postgresql+asyncpg://...), or "
                     "allow it for tests or a single VM with --allow-sqlite or "
                     "PUSHPOOL_TICK_ALLOW_SQLITE=1")


def check_store(url_backend: str, settings: Settings, allow_sqlite: bool = False) -> None:
    """Refuse SQLite unless allowed: invocations of a function share no file."""
    if url_backend == "sqlite" and not (allow_sqlite or settings.tick_allow_sqlite):
        raise TickRefused("a tick needs a store that every invocation shares, and SQLite is "
                          "a file on one machine; " + ALLOW_SQLITE_HINT)


def register_extra_providers(settings: Settings) -> None:
    """The pool types of ``PUSHPOOL_EXTRA_PROVIDERS``, as a server registers them."""
    from providers import registry

    for pool_type, module in settings.extra_providers.items():
        registry.register_provider(pool_type, module)


async def tick_once(settings: Settings, max_seconds: float, *,
                    allow_sqlite: bool = False, first_connection: Any = None
                    ) -> TickSummary:
    """Connect to the store, run one tick, close: ``pushpool tick`` (cron on a VM).
    ``first_connection``: the idle probe's (PostgreSQL only), for the store to take over."""
    from providers import registry

    url = settings.resolved_database_url()
    check_store(make_url(url).get_backend_name(), settings, allow_sqlite)
    register_extra_providers(settings)
    started = time.monotonic()
    db = await Database.connect(url, first_connection=first_connection)
    try:
        left = max_seconds - (time.monotonic() - started)
        return await run_tick(db, settings, left)
    finally:
        await registry.close_all()
        await db.close()


def tick_settings(settings: Settings, max_seconds: float) -> Settings:
    """The settings a tick runs with: one submit call takes at most a share of the tick."""
    submit = max(min(settings.submit_timeout_seconds, max_seconds * SUBMIT_SHARE),
                 MIN_SUBMIT_SECONDS)
    return settings.model_copy(update={"submit_timeout_seconds": submit})


async def run_tick(db: Database, settings: Settings, max_seconds: float, *,
                   api_url: str | None = None) -> TickSummary:
    """One bounded pass over ``db`` that ends within ``max_seconds`` (see the docstring)."""
    started = time.monotonic()
    end = started + max(max_seconds, 0.0)
    config = tick_settings(settings, max_seconds)
    engine = Engine(db, config, api_url=api_url)
    summary = TickSummary()

    def left() -> float:
        return end - time.monotonic()

    def leave(what: str) -> None:
        summary.complete = False
        summary.left.append(what)

    async def phase(name: str, work: Awaitable[T], budget: float) -> T | None:
        began = time.monotonic()
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                return await work
        except TimeoutError:
            leave(f"{name} was cut short by the deadline")
            return None
        finally:
            summary.ms[name] = round((time.monotonic() - began) * 1000, 2)

    reserve = config.submit_timeout_seconds  # what stopping may take: a submit's limit
    if left() > reserve:
        await engine.load_run_token_key()
        summary.scheduled = await phase("schedule", engine.scheduler.schedule_once(),
                                        left() - reserve) or 0
    else:
        leave("no time to start: the deadline was too near")
    if left() > reserve:
        summary.watch_passes = await phase("watch", _watch(engine), left() - reserve) or 0
    if left() > reserve:
        outcome = await phase("submit", _claim_and_submit(engine, reserve, left), left())
        summary.claimed, drained = outcome or (0, False)
        if not drained:
            leave("more runs may be due")
    began = time.monotonic()
    summary.unfinished = await engine.dispatcher.wait_in_flight(0)
    if summary.unfinished:
        leave(f"{summary.unfinished} claimed run(s) were still submitting; those not yet "
              "sent were handed back")
    await engine.dispatcher.stop()  # waits for begun submits, writes their records
    await engine.notices.flush()  # servers sharing the store hear what this tick did
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(left(), 0.0)):
            await engine.watcher.stop()
    summary.ms["stop"] = round((time.monotonic() - began) * 1000, 2)
    summary.ms["total"] = round((time.monotonic() - started) * 1000, 2)
    log.info("%s", summary.line())
    return summary


async def _watch(engine: Engine) -> int:
    """Pages of active runs until a sweep is done (watch_once answers 0 while more remain)."""
    passes = 0
    while True:
        passes += 1
        if await engine.watcher.watch_once() > 0:
            return passes


async def _claim_and_submit(engine: Engine, reserve: float,
                            left: Callable[[], float]) -> tuple[int, bool]:
    """Claim until nothing more is due or the time is nearly up; submits run meanwhile.
    Answers the runs claimed and whether nothing more was due."""
    dispatcher = engine.dispatcher
    claimed = 0
    while left() > reserve:
        taken = await dispatcher.claim_once()
        claimed += taken
        if taken:
            continue
        # Nothing claimable now, or no room while submits are in flight: wait for one.
        if await dispatcher.wait_in_flight(left() - reserve) == 0:
            # None in flight and nothing claimed: done, unless one just ended and freed a
            # concurrency slot, which a last claim finds.
            taken = await dispatcher.claim_once()
            claimed += taken
            if not taken:
                return claimed, True
    return claimed, False
