"""Azure Functions entry points, in the v2 Python programming model.

``app`` is the function app: a package's ``function_app.py`` says
``from dispatcher.triggers.azure import app``. It holds two functions:

- ``pushpool_http``: an anonymous HTTP trigger on every path (``host.json`` sets
  ``routePrefix`` to ""), forwarded to the API in-process (``host.py``), whose own API
  token and webhook signatures authenticate each request;
- ``pushpool_tick``: a timer trigger, every minute (``TICK_SCHEDULE``, an NCRONTAB with
  seconds), running one tick.

Azure tells a function no remaining time: a tick takes at most ``PUSHPOOL_TICK_MAX_SECONDS``
(50 s by default), which must stay under ``functionTimeout`` in ``host.json``.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import azure.functions as func

from dispatcher.triggers.host import HttpRequest, get_host, tick_budget

log = logging.getLogger(__name__)

TICK_SCHEDULE = "0 * * * * *"


def http_trigger(req: func.HttpRequest) -> func.HttpResponse:
    """Every HTTP request: the API, forwarded in-process."""
    host = get_host()
    url = urlsplit(req.url)
    forwarded = HttpRequest(req.method, url.path or "/", url.query,
                            list(req.headers.items()), req.get_body())
    response = host.run(host.forward(forwarded, host.settings.tick_max_seconds))
    headers: dict[str, str] = {}
    for key, value in response.headers:
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return func.HttpResponse(response.body, status_code=response.status, headers=headers)


def timer_trigger(timer: func.TimerRequest) -> None:
    """The timer: one tick."""
    if timer.past_due:
        log.info("the timer is past due: this tick catches up")
    host = get_host()
    summary = host.run(host.tick(tick_budget(host.settings, None)))
    log.info("%s", summary.line())


app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.function_name("pushpool_http")(app.route(route="{*path}")(http_trigger))
app.function_name("pushpool_tick")(
    app.timer_trigger(schedule=TICK_SCHEDULE, arg_name="timer")(timer_trigger))
