"""`pushpool server start`: the API, the scheduler and the dispatcher in one process.

Ctrl-C (SIGINT) or SIGTERM stops it cleanly: the API stops taking requests, in-flight
submissions finish (or their runs are handed back, claimable at once), then the store
closes. Runs already submitted keep going at their provider and are re-attached on the
next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from dispatcher.settings import Settings, get_settings
from dispatcher.store import Database

log = logging.getLogger("pushpool.server")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def serve(settings: Settings, host: str, port: int,
                ready: asyncio.Event | None = None) -> None:
    from dispatcher.api.app import create_app
    from dispatcher.engine.engine import Engine
    from providers import registry

    for pool_type, module in settings.extra_providers.items():
        registry.register_provider(pool_type, module)
    db = await Database.connect(settings.resolved_database_url())
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
