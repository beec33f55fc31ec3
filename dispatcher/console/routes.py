"""Where the console's pages live (``/``; the API stays at ``/api``), sign-in and sign-out,
and the static files. With ``PUSHPOOL_API_TOKEN`` set every page needs a signed-in
session; without it the console is open, as the API is."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from aiohttp import web

from dispatcher.api.context import settings_of
from dispatcher.console import figures, pages, session
from dispatcher.console.render import compile_templates
from dispatcher.errors import InvalidInput, NotFound

STATIC = Path(__file__).parent / "static"
Page = Callable[[web.Request], Awaitable[web.Response]]

PAGES: tuple[tuple[str, Page], ...] = (
    ("/", pages.dashboard),
    ("/pools", pages.pools),
    ("/pools/new", pages.new_pool),
    ("/pools/{pool}", pages.pool),
    ("/deployments", pages.deployments),
    ("/deployments/{flow}/{name}", pages.deployment),
    ("/runs", pages.runs),
    ("/runs/{id}", pages.run),
)
# Paths the API's token check leaves to the console (each checks the session itself).
CONSOLE_PATHS = frozenset([path for path, _ in PAGES] + ["/login", "/logout",
                                                         "/static"])


def _token(request: web.Request) -> str:
    token = settings_of(request).api_token
    return token.get_secret_value() if token is not None else ""


def _guarded(handler: Page) -> Page:
    async def guarded(request: web.Request) -> web.Response:
        token = _token(request)
        if token and not session.signed_in(request, token):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        try:
            return await handler(request)
        except NotFound as exc:
            return await pages.not_found(request, str(exc))
        except InvalidInput as exc:
            return pages.page(request, "not_found.html", status=400, message=str(exc))
    return guarded


def _same_origin(request: web.Request) -> bool:
    """A browser's form post from this server's own pages (never another site's)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def _safe_next(target: str | None) -> str:
    # Only a path on this server: "//evil.example" or "https://..." would leave it.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def login_form(request: web.Request) -> web.Response:
    if not _token(request):
        raise web.HTTPSeeOther("/")
    return pages.page(request, "login.html", next=_safe_next(request.query.get("next")),
                      error=None)


async def login(request: web.Request) -> web.Response:
    token = _token(request)
    if not token:
        raise web.HTTPSeeOther("/")
    if not _same_origin(request):
        raise web.HTTPForbidden(text="cross-site sign-in refused")
    form = await request.post()
    given = str(form.get("token", ""))
    target = _safe_next(str(form.get("next", "/")))
    if not hmac.compare_digest(given.encode(), token.encode()):
        return pages.page(request, "login.html", status=401, next=target,
                          error="That is not the server's API token (PUSHPOOL_API_TOKEN).")
    response = web.HTTPSeeOther(target)
    session.set_session_cookie(response, session.new_session(token),
                               secure=request.secure)
    raise response


async def logout(request: web.Request) -> web.Response:
    token = _token(request)
    cookie = request.cookies.get(session.COOKIE, "")
    form = await request.post()
    if token and not (_same_origin(request)
                      and session.csrf_valid(token, cookie, str(form.get("csrf", "")))):
        raise web.HTTPForbidden(text="sign-out needs the page's CSRF token")
    response = web.HTTPSeeOther("/login" if token else "/")
    session.clear_session_cookie(response)
    raise response


async def _warm_up(app: web.Application) -> None:
    # In a thread and not awaited: the server answers at once, and the templates are
    # compiled before anyone opens a page.
    asyncio.get_running_loop().run_in_executor(None, compile_templates)


def add_console(app: web.Application) -> None:
    app[pages.FIGURES_KEY] = figures.StoreFigures()
    app.on_startup.append(_warm_up)
    for path, handler in PAGES:
        app.router.add_get(path, _guarded(handler))
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static", STATIC, append_version=True)
