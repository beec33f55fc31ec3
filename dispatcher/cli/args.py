"""Parsing of the CLI's structured flag values: ``--param``, ``--params``, ``--job-variable``,
``--start-in`` and ``--start-at``. Pure functions; a bad value raises ``CliError`` naming the flag.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatcher.cli.output import CliError
from dispatcher.client import ApiError

_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# How far ahead a run may be started: ten years, dispatcher.models.MAX_SECONDS (mirrored,
# not imported: pydantic would slow every command), which the API holds to as well.
MAX_START_AHEAD = timedelta(seconds=10 * 366 * 24 * 3600)


def json_or_string(text: str) -> Any:
    """A flag value as JSON when it is valid JSON (``3``, ``true``, ``[1]``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _split_pair(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise CliError(f"{flag} {item!r} is not KEY=VALUE",
                       f"write it as {flag} name=value, e.g. {flag} x=1")
    return key.strip(), value


def parse_params(pairs: Iterable[str], params_json: str | None) -> dict[str, Any]:
    """``--params`` (a JSON object) first, then each ``--param k=v`` on top of it."""
    result: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise CliError(f"--params is not valid JSON: {exc}",
                           """pass a JSON object, e.g. --params '{"x": 1}'""") from None
        if not isinstance(loaded, dict):
            raise CliError("--params must be a JSON object",
                           """pass a JSON object, e.g. --params '{"x": 1}'""")
        result.update(loaded)
    for item in pairs:
        key, value = _split_pair(item, "--param")
        result[key] = json_or_string(value)
    return result


def parse_job_variables(pairs: Iterable[str]) -> dict[str, Any]:
    """``--job-variable k=v``; a dotted key (``env.FOO=bar``) sets a nested dict."""
    result: dict[str, Any] = {}
    for item in pairs:
        key, value = _split_pair(item, "--job-variable")
        parts = key.split(".")
        if any(not part for part in parts):
            raise CliError(f"--job-variable key {key!r} has an empty part",
                           "use dotted names like env.FOO=bar")
        target = result
        for part in parts[:-1]:
            existing = target.get(part)
            if existing is None:
                existing = target[part] = {}
            elif not isinstance(existing, dict):
                raise CliError(f"--job-variable {key!r} goes inside {part!r}, "
                               "which was already set to a plain value")
            target = existing
        target[parts[-1]] = json_or_string(value)
    return result


def parse_duration(text: str, flag: str = "--start-in") -> timedelta:
    """``30s``, ``10m``, ``2h``, ``1d`` or combinations such as ``1h30m``."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or _DURATION_PART.sub("", cleaned):
        raise CliError(f"{flag} {text!r} is not a duration",
                       "use a number and a unit: 30s, 10m, 2h, 1d (or 1h30m)")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(cleaned))
    if seconds > MAX_START_AHEAD.total_seconds():
        raise CliError(f"{flag} {text!r} is more than ten years ahead",
                       "give a shorter duration, e.g. 30d")
    return timedelta(seconds=seconds)


def parse_start_at(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is taken as local time. Answered in UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"--start-at {text!r} is not an ISO 8601 time",
                       "e.g. --start-at 2026-01-31T09:00:00Z") from None
    try:
        if moment.tzinfo is None:
            moment = moment.astimezone()  # local time zone
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):  # 9999-12-31 in a zone ahead of UTC
        raise CliError(f"--start-at {text!r} is more than ten years ahead",
                       "give a time within the next ten years") from None


def scheduled_time(start_in: str | None, start_at: str | None,
                   now: datetime | None = None) -> datetime | None:
    """The run's start from ``--start-in``/``--start-at`` (None: as soon as possible)."""
    if start_in is not None and start_at is not None:
        raise CliError("--start-in and --start-at cannot be used together", "pick one")
    now = now or datetime.now(UTC)
    if start_in is not None:
        return now + parse_duration(start_in)
    if start_at is not None:
        moment = parse_start_at(start_at)
        if moment - now > MAX_START_AHEAD:
            raise CliError(f"--start-at {start_at!r} is more than ten years ahead",
                           "give a time within the next ten years")
        return moment
    return None


def param_quoting_hint(error: ApiError, pairs: Iterable[str]) -> str | None:
    """How to pass a ``--param`` as a string when the flow wants one and the value parsed
    as JSON (``--param repo_name=123`` sent the number 123)."""
    for detail in error.details:
        if not isinstance(detail, dict) or "is not of type 'string'" not in str(
                detail.get("message", "")):
            continue
        name = str(detail.get("field", "")).removeprefix("parameters.")
        for item in pairs:
            key, _, value = item.partition("=")
            if key.strip() == name and not isinstance(json_or_string(value), str):
                quoted = json.dumps(value).replace("'", "'\\''")
                return (f"{name} must be a string; quote it as JSON to send {value} as "
                        f"text: --param {name}='{quoted}'")
    return None


def split_deployment_name(name: str) -> tuple[str, str]:
    """``FLOW/DEPLOYMENT`` into its two parts."""
    flow, sep, deployment = name.partition("/")
    if not sep or not flow or not deployment or "/" in deployment:
        raise CliError(f"deployment {name!r} must be written FLOW/DEPLOYMENT",
                       "list deployments with `pushpool deployment ls`")
    return flow, deployment
