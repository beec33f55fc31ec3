"""The console's Jinja2 environment: templates from this package, autoescaped, and the
filters pages use to show times, ids, durations and schedules the way the CLI does."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from dispatcher import display, redaction


def ago(moment: datetime | None) -> str:
    """'5 minutes ago', 'in 2 hours', 'now': the CLI's wording."""
    return display.relative_time(moment) or "-"


def duration(start: datetime | None, end: datetime | None) -> str:
    return display.run_duration(start, end) or "-"


def short_id(value: str | None) -> str:
    return display.short_id(value) or ""


def iso(moment: datetime | None) -> str:
    parsed = display.parse_time(moment)
    return parsed.isoformat(timespec="seconds") if parsed else ""


def schedule_words(schedule: Any) -> str:
    """'At 01:00 (Europe/Paris)', 'every 5 minutes', or the RRULE as written."""
    if schedule.cron:
        from cron_descriptor import get_description  # a few ms; only pages with crons

        try:
            words = get_description(schedule.cron)
        except Exception:  # an expression the library cannot put in words: show it
            words = schedule.cron
        return f"{words} ({schedule.timezone})"
    if schedule.interval:
        return "every " + _interval_words(schedule.interval)
    return f"{schedule.rrule} ({schedule.timezone})"


def _interval_words(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}s" if count != 1 else unit
    return f"{seconds:g} seconds"


def pretty_json(value: Any) -> str:
    """Indented JSON with secret-looking values masked, as API answers mask them."""
    return json.dumps(redaction.redact_json(value), indent=2, sort_keys=True, default=str)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("dispatcher.console", "templates"),
                      autoescape=select_autoescape(default=True), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, enable_async=False)
    env.filters.update(ago=ago, short=short_id, iso=iso, schedule_words=schedule_words,
                       pretty_json=pretty_json)
    env.globals["duration"] = duration
    env.globals["state_detail"] = display.state_detail
    return env


def compile_templates() -> None:
    """Compile every template now (20-50 ms each), so no visitor waits for it."""
    env = environment()
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
