"""`pushpool server start`: the API, the scheduler and the dispatcher in one process.

Ctrl-C (SIGINT) or SIGTERM stops it cleanly: the API stops taking requests, in-flight
submissions finish (or their runs are handed back, claimable at once), then the store
closes. Runs already submitted keep going at their provider and are re-attached on the
next start.

A PostgreSQL store that does not answer at start (still booting beside the server, or
restarting) is waited for, with a warning per try, instead of ending the process; once the
server runs, an outage makes GET /api/health say "degraded" and other routes answer 503
until the database is back. A store whose secrets were sealed with another key than the
configured one stops the start with the way to fix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from dispatcher import start_failures
from dispatcher.crypto import SecretDecryptError
from dispatcher.engine import heap
from dispatcher.settings import Settings, get_settings
from dispatcher.store import Database
from dispatcher.store.reachability import store_unreachable
from dispatcher.store.sealed import check_key

log = logging.getLogger("pushpool.server")

STORE_RETRY_FIRST_SECONDS = 0.5
STORE_RETRY_MAX_SECONDS = 5.0


class MigrationStepsOnly(logging.Filter):
    """Alembic's INFO lines, but for the migrations it runs: not its set-up chatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.getMessage().startswith("Running ")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Seven lines of plugin set-up, then "Context impl" and "Will assume ... DDL" on every
    # start: none says anything a user can act on.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, MigrationStepsOnly) for f in migration.filters):
        migration.addFilter(MigrationStepsOnly())


async def connect_store(url: str, stop: asyncio.Event) -> Database | None:
    """The store, once it answers; None if ``stop`` is set while waiting for it. Only a
    server database is waited for: the embedded SQLite file has no one to wait for."""
    waits = make_url(url).get_backend_name() != "sqlite"
    shown = make_url(url).render_as_string(hide_password=True)
    delay = STORE_RETRY_FIRST_SECONDS
    while True:
        try:
            return await Database.connect(url)
        except Exception as exc:
            if not waits or not store_unreachable(exc):
                raise
            log.warning("the database at %s does not answer (%s: %s); retrying in %.1fs",
                        shown, type(exc).__name__, exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return None
        delay = min(delay * 2, STORE_RETRY_MAX_SECONDS)


async def serve(settings: Settings, host: str, port: int,
                ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT or SIGTERM; StartFailure if the store or the port is unusable."""
    from dispatcher.api.app import create_app
    from dispatcher.engine.engine import Engine
    from dispatcher.engine.tick import register_extra_providers
    from providers import registry

    register_extra_providers(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = settings.resolved_database_url()
    try:
        db = await connect_store(url, stop)
    except Exception as exc:
        raise start_failures.store_failure(exc, url) from None
    if db is None:
        log.info("stopped before the database answered")
        return
    try:
        await check_key(db)  # its first write, when the store is new: the key check
    except SecretDecryptError as exc:
        await db.close()
        raise start_failures.StartFailure(
            f"not starting: {exc} (replicas that share one database must all be given the "
            "same PUSHPOOL_SECRET_KEY)", 1) from None
    except Exception as exc:
        await db.close()
        raise start_failures.store_failure(exc, url) from None
    engine = Engine(db, settings, api_url=f"http://{host}:{port}")
    runner = web.AppRunner(create_app(db, engine, settings), handle_signals=False)
    started = False
    try:
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise start_failures.cannot_listen(exc, host, port) from None
        try:
            await engine.start()  # its first write: the run-token signing key
        except Exception as exc:
            raise start_failures.store_failure(exc, url) from None
        started = True
        heap.freeze_long_lived("start-up")
        log.info("pushpool listening on http://%s:%d (store: %s)", host, port, db.dialect)
        print(f"pushpool server running on http://{host}:{port} — press Ctrl-C to stop",
              flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        if started:
            log.info("shutting down")
        await runner.shutdown()
        if started:
            await engine.stop()
        await runner.cleanup()
        await registry.close_all()
        await db.close()
        if started:
            log.info("stopped")


def run_server(host: str | None = None, port: int | None = None) -> None:
    """`pushpool server start`: serve until stopped; a start-up failure is one line on
    stderr and a non-zero exit (dispatcher/start_failures.py)."""
    try:
        try:
            settings = get_settings()
        except ValidationError as exc:
            raise start_failures.bad_settings(exc) from None
        configure_logging(settings.log_level)
        heap.enable()  # this process is the server's own
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings, host or settings.host, port or settings.port))
    except start_failures.StartFailure as failure:
        print(f"Error: {failure.message}", file=sys.stderr, flush=True)
        raise SystemExit(failure.exit_code) from None
