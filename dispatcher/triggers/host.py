"""The warm container of a cloud function: one event loop, one store, the API in-process.

Every trigger (aws_lambda, gcp, azure) turns its platform's event into a call here. The
host is made on the first event and kept while the container stays warm: an event loop in
a daemon thread (platforms call handlers from threads of their own, sometimes several at
once), the store, and the server's own aiohttp application (``dispatcher.api.create_app``)
served on an ephemeral port of 127.0.0.1. An HTTP event is forwarded to that port as it
came, so it meets the same routes, validation and authentication as on a server; when a
request may have made a run due (the app told its engine handle), a short tick follows so
the run is submitted without waiting for the timer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from dispatcher.settings import Settings, get_settings

if TYPE_CHECKING:  # the store, the engine and aiohttp load on the first event, not at import
    from aiohttp import ClientSession, web

    from dispatcher.engine.tick import TickSummary
    from dispatcher.operations.events import EventOutcome
    from dispatcher.store import Database
    from providers.base import InfraEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

SAFETY_SECONDS = 1.0  # of the platform's remaining time, kept for answering and logging
HTTP_TICK_SECONDS = 5.0  # the most a tick after an HTTP request may add to its answer
# Hop-by-hop headers, and those the forwarding client sets itself.
_DROPPED = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te",
                      "upgrade", "content-length", "proxy-connection", "trailer"})


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # starts with "/"
    query: str  # without "?"
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def tick_budget(settings: Settings, remaining_seconds: float | None) -> float:
    """Seconds a tick may take: the platform's remaining time less a margin, at most
    ``tick_max_seconds`` (the whole of it where the platform tells no remaining time)."""
    if remaining_seconds is None:
        return settings.tick_max_seconds
    return max(0.0, min(remaining_seconds - SAFETY_SECONDS, settings.tick_max_seconds))


class _Notices:
    """The app's engine handle: counts what would have woken a server's engine."""

    def __init__(self) -> None:
        self.count = 0

    def wake(self) -> None:
        self.count += 1

    def notify_cancel(self, run_id: str) -> None:
        self.count += 1

    def schedules_changed(self) -> None:
        self.count += 1

    def infra_changed(self) -> None:
        self.count += 1


class Host:
    """What a warm container keeps between events (see the module docstring)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="pushpool-host")
        self._thread.start()
        self._lock = asyncio.Lock()
        self._db: Database | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._base_url = ""
        self._notices = _Notices()
        self._handed: Any = None  # the idle probe's connection, for the store to take

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the host's loop from any thread and answer its result."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def database(self) -> Database:
        from sqlalchemy.engine import make_url

        from dispatcher.engine.tick import check_store, register_extra_providers
        from dispatcher.store import Database

        async with self._lock:
            if self._db is None:
                url = self.settings.resolved_database_url()
                check_store(make_url(url).get_backend_name(), self.settings)
                register_extra_providers(self.settings)
                handed, self._handed = self._handed, None
                self._db = await Database.connect(url, first_connection=handed)
            return self._db

    async def _app_url(self) -> str:
        db = await self.database()
        async with self._lock:
            if self._runner is None:
                from aiohttp import ClientSession, web

                from dispatcher.api import create_app

                runner = web.AppRunner(create_app(db, self._notices, self.settings),
                                       access_log=None, handle_signals=False)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                self._base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
                self._session = ClientSession(auto_decompress=False)
                self._runner = runner
            return self._base_url

    async def forward(self, request: HttpRequest, seconds: float) -> HttpResponse:
        """Send ``request`` to the in-process app; a tick follows if it made work."""
        from dispatcher.engine.tick import TickRefused

        try:
            base = await self._app_url()
        except TickRefused as exc:
            return _json_error(503, "store_not_shared", str(exc))
        from aiohttp import ClientTimeout

        assert self._session is not None
        notices = self._notices.count
        url = base + request.path + (f"?{request.query}" if request.query else "")
        headers = [(k, v) for k, v in request.headers if k.lower() not in _DROPPED]
        async with self._session.request(
                request.method, url, headers=headers, data=request.body or None,
                allow_redirects=False, timeout=ClientTimeout(total=max(seconds, 1.0)),
                skip_auto_headers=("Content-Type", "User-Agent", "Accept",
                                   "Accept-Encoding")) as answer:
            body = await answer.read()
            response = HttpResponse(answer.status, [
                (k, v) for k, v in answer.headers.items() if k.lower() not in _DROPPED],
                body)
        if self._notices.count != notices:
            await self.tick(min(seconds - SAFETY_SECONDS, HTTP_TICK_SECONDS))
        return response

    async def tick(self, seconds: float) -> TickSummary:
        """A tick within ``seconds``. Until the store is loaded (a cold container, or one
        whose ticks have all been idle), the idle probe asks first whether there is
        anything to do, with one asyncpg connection and no import of the store."""
        if self._db is None:
            from dispatcher.engine.idle_probe import idle_tick

            idle, self._handed = await idle_tick(self.settings)
            if idle is not None:
                return idle
        from dispatcher.engine.tick import run_tick

        db = await self.database()
        return await run_tick(db, self.settings, seconds)

    async def apply_events(self, events: list[InfraEvent]) -> list[EventOutcome]:
        """Apply events a platform delivered itself, as the events route would."""
        from dispatcher.operations.events import apply_event

        db = await self.database()
        return [await apply_event(db, event) for event in events]

    async def close(self) -> None:
        from providers import registry

        if self._handed is not None:  # a probe's connection no store took over
            await self._handed.close()
            self._handed = None
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await registry.close_all()
        if self._db is not None:
            await self._db.close()
        self._db = self._runner = self._session = None

    def stop(self) -> None:
        """Close everything and end the loop's thread."""
        self.run(self.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def _json_error(status: int, code: str, message: str) -> HttpResponse:
    import json

    body = json.dumps({"error": code, "message": message, "details": []}).encode()
    return HttpResponse(status, [("Content-Type", "application/json")], body)


_HOST: Host | None = None
_HOST_LOCK = threading.Lock()


def get_host() -> Host:
    """The container's host, made on the first event."""
    global _HOST
    with _HOST_LOCK:
        if _HOST is None:
            _HOST = Host(get_settings())
        return _HOST


def reset_host() -> None:
    """Close and forget the host (tests; a container never needs it)."""
    global _HOST
    with _HOST_LOCK:
        host, _HOST = _HOST, None
    if host is not None:
        host.stop()
