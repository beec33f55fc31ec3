"""`pushpool server start`: the API, the scheduler and the dispatcher in one process.

Ctrl-C (SIGINT) or SIGTERM stops it cleanly: the API stops taking requests, in-flight
submissions finish (or their runs are handed back, claimable at once), then the store
closes. Runs already submitted keep going at their provider and are re-attached on the
next start.

A PostgreSQL store that does not answer at start (still booting beside the server, or
restarting) is waited for, with a warning per try, instead of ending the process; once the
server runs, an outage makes GET /api/health say "degraded" and other routes answer 503
until the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from sqlalchemy.engine import make_url

from dispatcher.settings import Settings, get_settings
from dispatcher.store import Database
from dispatcher.store.reachability import store_unreachable

log = logging.getLogger("pushpool.server")

STORE_RETRY_FIRST_SECONDS = 0.5
STORE_RETRY_MAX_SECONDS = 5.0


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


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
    from dispatcher.api.app import create_app
    from dispatcher.engine.engine import Engine
    from dispatcher.engine.tick import register_extra_providers
    from providers import registry

    register_extra_providers(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    db = await connect_store(settings.resolved_database_url(), stop)
    if db is None:
        log.info("stopped before the database answered")
        return
    engine = Engine(db, settings, api_url=f"http://{host}:{port}")
    app = create_app(db, engine, settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    await engine.start()
    log.info("pushpool listening on http://%s:%d (store: %s)", host, port, db.dialect)
    print(f"pushpool server running on http://{host}:{port} — press Ctrl-C to stop",
          flush=True)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.shutdown()
        await engine.stop()
        await runner.cleanup()
        await registry.close_all()
        await db.close()
        log.info("stopped")


def run_server(host: str | None = None, port: int | None = None) -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, host or settings.host, port or settings.port))
