"""The console's pages: each reads what it shows through the store, as the API's handlers
do, masks secrets as API answers do, and renders one template. Pages change nothing; their
buttons call the JSON API (static/console.js), so an action goes through the API's own
validation and shows its messages."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from dispatcher import metrics, redaction, store
from dispatcher.api.context import db_of, settings_of
from dispatcher.api.display import with_display_state
from dispatcher.console import figures, session
from dispatcher.console.render import render
from dispatcher.errors import NotFound
from dispatcher.models import RunState
from providers.registry import available_types

RUNS_PAGE = 50
# The runs list's time filter: label -> how far back.
SINCE = {"hour": ("the last hour", timedelta(hours=1)), "day": ("the last 24 hours",
         timedelta(days=1)), "week": ("the last 7 days", timedelta(days=7))}
POOL_DEPLOYMENTS = 50
STATES = [state.value for state in RunState]
PROVIDER_CONSOLES = {"ecs": "ECS task", "cloud-run": "Cloud Run execution",
                     "azure-container-instance": "ACI container group", "modal": "Modal app"}


def _token(request: web.Request) -> str:
    token = settings_of(request).api_token
    return token.get_secret_value() if token is not None else ""


def page(request: web.Request, template: str, status: int = 200,
         **context: Any) -> web.Response:
    token = _token(request)
    cookie = request.cookies.get(session.COOKIE, "")
    csrf = session.csrf_for(token, cookie) if token and cookie else ""
    html = render(template, request_path=request.path, csrf=csrf, signed_in=bool(token),
                  **context)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers=SECURITY_HEADERS)


# Scripts and styles come only from this server; no page may be framed by another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _shown(models: list[Any]) -> list[Any]:
    return [redaction.redact_model(model) for model in models]


FIGURES_KEY = web.AppKey("console_figures", figures.StoreFigures)
DEPLOYMENTS_PAGE = 100
STATE_COLOURS = {"SCHEDULED": "#6b7280", "PENDING": "#60a5fa", "RUNNING": "#2456c8",
                 "COMPLETED": "#1d7a3a", "FAILED": "#b3261e", "CRASHED": "#7f1d1d",
                 "CANCELLING": "#9a6700", "CANCELLED": "#111827"}


def _lines(history: list[figures.Snapshot], width: int = 600,
           height: int = 120) -> list[dict[str, str]]:
    """An SVG polyline per state that had runs: its count at each snapshot."""
    if len(history) < 2:
        return []
    start, span = history[0].taken, max(history[-1].taken - history[0].taken, 1.0)
    top = max((max(s.by_state.values(), default=0) for s in history), default=0) or 1
    lines = []
    for state in STATES:
        if not any(s.by_state.get(state) for s in history):
            continue
        points = " ".join(
            f"{width * (s.taken - start) / span:.1f},"
            f"{height - height * s.by_state.get(state, 0) / top:.1f}" for s in history)
        lines.append({"state": state, "points": points, "colour": STATE_COLOURS[state]})
    return lines


async def dashboard(request: web.Request) -> web.Response:
    db = db_of(request)
    snapshot = await request.app[FIGURES_KEY].current(db)
    history = list(request.app[FIGURES_KEY].history)
    late = await late_runs(db, await store.list_pools(db), limit=200)
    recent = await with_display_state(db, await store.list_runs(db, limit=10))
    latency = metrics.dispatch_latency_histogram()
    by_state = snapshot.by_state if snapshot else Counter()
    return page(request, "dashboard.html", snapshot=snapshot, by_state=by_state,
                by_pool=snapshot.by_pool if snapshot else {},
                figures_age=time.time() - snapshot.taken if snapshot else None,
                biggest=max(by_state.values(), default=0), states=STATES,
                lines=_lines(history), history_minutes=(
                    (history[-1].taken - history[0].taken) / 60 if len(history) > 1 else 0),
                latency=latency, latency_most=max((n for _, n in latency), default=0),
                recent=_shown(recent),
                late=late, breaker_paused=snapshot.breaker_paused if snapshot else [])


async def late_runs(db: Any, pools: list[Any], limit: int = 1000) -> list[Any]:
    """Runs shown LATE now, the longest overdue first (at most ``limit`` are read)."""
    floor = min((p.late_after_seconds for p in pools), default=0)
    overdue = await store.scheduled_before(db, datetime.now(UTC) - timedelta(seconds=floor),
                                           limit=limit)
    return [run for run in await with_display_state(db, overdue)
            if run.display_state == "LATE"]


async def pools(request: web.Request) -> web.Response:
    db = db_of(request)
    listed = await store.list_pools(db)
    late = Counter(run.pool_name for run in await late_runs(db, listed))
    return page(request, "pools.html", pools=_shown(listed), late=late)


async def new_pool(request: web.Request) -> web.Response:
    return page(request, "pool_new.html", types=sorted(available_types().items()))


async def pool(request: web.Request) -> web.Response:
    db = db_of(request)
    name = request.match_info["pool"]
    found = await store.get_pool(db, name)
    queues = await store.list_queues(db, name)
    deployments = await store.list_deployments(db, pool_name=name, limit=POOL_DEPLOYMENTS + 1)
    runs = await with_display_state(db, await store.list_runs(db, pool_name=name, limit=20))
    return page(request, "pool.html", pool=redaction.redact_model(found), queues=queues,
                deployments=_shown(deployments[:POOL_DEPLOYMENTS]),
                more_deployments=len(deployments) > POOL_DEPLOYMENTS, runs=_shown(runs))


async def deployments(request: web.Request) -> web.Response:
    pool_name = request.query.get("pool") or None
    offset = _offset(request)
    listed = await store.list_deployments(db_of(request), pool_name=pool_name,
                                          limit=DEPLOYMENTS_PAGE + 1, offset=offset)
    return page(request, "deployments.html", deployments=_shown(listed[:DEPLOYMENTS_PAGE]),
                pool_name=pool_name or "", offset=offset, page_size=DEPLOYMENTS_PAGE,
                more=len(listed) > DEPLOYMENTS_PAGE)


def _offset(request: web.Request) -> int:
    try:
        return max(0, int(request.query.get("offset", "0")))
    except ValueError:
        return 0


async def deployment(request: web.Request) -> web.Response:
    db = db_of(request)
    ref = f"{request.match_info['flow']}/{request.match_info['name']}"
    found = await store.get_deployment(db, ref)
    try:
        template = (await store.get_pool(db, found.pool_name)).base_job_template
    except NotFound:
        template = {}
    upcoming = await with_display_state(db, await store.list_runs(
        db, deployment_ref=ref, state=RunState.SCHEDULED, limit=5))
    recent = await with_display_state(db, await store.list_runs(db, deployment_ref=ref,
                                                                 limit=10))
    return page(request, "deployment.html", deployment=redaction.redact_model(found),
                upcoming=_shown(upcoming), recent=_shown(recent),
                variables_schema=_overridable(template.get("variables") or {}))


def _overridable(variables: dict[str, Any]) -> dict[str, Any]:
    """The pool's variables schema with defaults dropped: the Run form overrides only what
    the user fills in, and must not show (or send back) a stored secret's default."""
    properties = {name: {k: v for k, v in spec.items() if k != "default"}
                  for name, spec in (variables.get("properties") or {}).items()
                  if isinstance(spec, dict)}
    return {"type": "object", "properties": properties}


async def runs(request: web.Request) -> web.Response:
    db = db_of(request)
    query = request.query
    state_name = query.get("state") or None
    state = RunState(state_name) if state_name in STATES else None
    pool_name = query.get("pool") or None
    deployment_ref = query.get("deployment") or None
    since = query.get("since") if query.get("since") in SINCE else ""
    offset = _offset(request)
    try:
        listed = await store.list_runs(
            db, state=state, pool_name=pool_name, deployment_ref=deployment_ref,
            created_after=datetime.now(UTC) - SINCE[since][1] if since else None,
            limit=RUNS_PAGE, offset=offset)
        problem = None
    except NotFound as exc:
        listed, problem = [], str(exc)
    shown = _shown(await with_display_state(db, listed))
    template = "runs_table.html" if query.get("fragment") else "runs.html"
    return page(request, template, runs=shown, states=STATES, state=state_name or "",
                pool_name=pool_name or "", deployment_ref=deployment_ref or "",
                since=since, since_choices=SINCE, offset=offset, page_size=RUNS_PAGE,
                problem=problem,
                pools=await store.list_pools(db) if template == "runs.html" else [])


async def run(request: web.Request) -> web.Response:
    db = db_of(request)
    (found,) = await with_display_state(db, [await store.get_run(db, request.match_info["id"])])
    pool_type = ""
    try:
        pool_type = (await store.get_pool(db, found.pool_name)).type
    except NotFound:
        pass
    provider_console = PROVIDER_CONSOLES.get(pool_type.split(":")[0], "provider console")
    return page(request, "run.html", run=redaction.redact_model(found),
                provider_console=provider_console)


async def not_found(request: web.Request, message: str) -> web.Response:
    return page(request, "not_found.html", status=404, message=message)
