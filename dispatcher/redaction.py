"""Secrets out of what the API shows: secret-looking env values and credentials in URLs.

The store keeps the real values and jobs receive them; only the API's answers (and so the
CLI, which prints them) carry redacted copies. What counts as a secret:

- the value of an environment variable whose name contains KEY, TOKEN, SECRET, PASSW(OR)D,
  PASSPHRASE, CREDENTIAL, AUTH or PRIVATE (any case), wherever an environment appears in
  job variables, a rendered job configuration or a pool's base job template: a mapping
  under a key such as ``env`` or ``environment`` (its JSON Schema ``default`` included), or
  a ``[{"name": ..., "value": ...}]`` list as cloud APIs write it;
- credentials written into a URL (``https://user:token@host/...``), in any shown string.

Template placeholders (``"{{ api_key }}"``) are not secrets and stay, so a template read
from the API still renders. Everything else (names, parameters, results) is shown as is.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel

REDACTED = "***"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWD|PASSWORD|PASSPHRASE|CREDENTIAL|AUTH|PRIVATE",
                         re.IGNORECASE)
# Keys whose value is an environment: name -> value (or a JSON Schema describing one).
ENV_KEYS = frozenset({"env", "environment", "environment_variables", "env_vars", "secrets"})
# scheme://userinfo@ : greedy up to the last '@' before the path, so 'p@ss' leaks nothing.
URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.\-]*://)[^/\s@]*(?:@[^/\s@]*)*@",
                          re.IGNORECASE)
PLACEHOLDER = re.compile(r"^\{\{\s*[\w.\-]+\s*\}\}$")

# Model fields redacted wherever they appear (Run, Deployment, WorkPool, nested models).
JSON_FIELDS = frozenset({"job_variables", "job_configuration", "base_job_template"})
TEXT_FIELDS = frozenset({"source", "state_message", "message", "error", "console_url"})

M = TypeVar("M", bound=BaseModel)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def redact_url(text: str) -> str:
    """``text`` with every URL's user:password@ part replaced by ``***@``."""
    if "@" not in text:
        return text
    return URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)


def url_credential(text: str) -> bool:
    """Whether ``text`` holds a URL with a password, or an http(s) URL with any user part
    (hosts take a token as the user name, as in ``https://TOKEN@github.com/...``).
    ``ssh://git@host/...`` names an account, not a secret."""
    for match in URL_USERINFO.finditer(text):
        userinfo = match.group(0)[len(match.group("scheme")):-1]
        if ":" in userinfo or match.group("scheme").lower() in ("http://", "https://"):
            return True
    return False


def _secret_value(name: Any, value: Any) -> Any:
    if isinstance(name, str) and is_secret_name(name) and isinstance(value, str) \
            and not PLACEHOLDER.match(value.strip()):
        return REDACTED
    return _redact(value, in_env=True)


def _redact(value: Any, in_env: bool) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list):
        return [_redact_pair(item, in_env) if isinstance(item, dict) else _redact(item, in_env)
                for item in value]
    if isinstance(value, dict):
        if in_env:
            return {key: _secret_value(key, item) for key, item in value.items()}
        return {key: _redact(item, in_env=str(key).lower() in ENV_KEYS)
                for key, item in value.items()}
    return value


def _redact_pair(item: dict[str, Any], in_env: bool) -> dict[str, Any]:
    """``{"name": "API_KEY", "value": "..."}``: the value hides when the name looks secret."""
    name = item.get("name")
    if isinstance(name, str) and "value" in item:
        return {**_redact(item, in_env=False), "value": _secret_value(name, item["value"])}
    return dict(_redact(item, in_env))


def redact_json(value: Any) -> Any:
    """A copy of ``value`` (JSON data) with secret env values and URL credentials hidden."""
    return _redact(value, in_env=False)


def redacted_path(value: Any, path: str = "") -> str | None:
    """Where ``value`` holds the placeholder ``***`` as a secret's value, or None.

    A body that sends one back (say, a template copied from ``work-pool inspect``) would
    overwrite the real secret with three stars, so the models refuse it.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if item == REDACTED and isinstance(key, str) and is_secret_name(key):
                return f"{path}.{key}".lstrip(".")
            found = redacted_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict) and item.get("value") == REDACTED \
                    and is_secret_name(str(item.get("name", ""))):
                return f"{path}[{index}].value".lstrip(".")
            found = redacted_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def redact_model(model: M) -> M:
    """A copy of ``model`` (a run, deployment, pool or a model holding them) safe to show."""
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name in JSON_FIELDS and value is not None:
            new = redact_json(value)
        elif name in TEXT_FIELDS and isinstance(value, str):
            new = redact_url(value)
        elif isinstance(value, BaseModel):
            new = redact_model(value)
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            new = [redact_model(v) if isinstance(v, BaseModel) else v for v in value]
        else:
            continue
        if new != value:
            update[name] = new
    return model.model_copy(update=update) if update else model
