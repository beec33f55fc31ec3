"""Secrets out of what the API shows: secret-looking env values and credentials in URLs.

The store keeps the real values (secrets sealed) and jobs receive them in clear; only the
API's answers (and so the CLI, which prints them) carry redacted copies. What counts as a
secret:

- a value sealed at rest (``dispatcher.sealing``: declared secret by a schema, such as a
  flow parameter typed ``SecretStr`` or a job variable marked ``writeOnly``), anywhere;
- the value of an environment variable whose name contains KEY, TOKEN, SECRET, PASSW(OR)D,
  PASSPHRASE, CREDENTIAL, AUTH or PRIVATE (any case), wherever an environment appears in
  job variables, a rendered job configuration or a pool's base job template: a mapping
  under a key such as ``env`` or ``environment`` (its JSON Schema ``default`` included), or
  a ``[{"name": ..., "value": ...}]`` list as cloud APIs write it;
- credentials written into a URL (``https://user:token@host/...``), in any shown string.

Template placeholders (``"{{ api_key }}"``) are not secrets and stay, so a template read
from the API still renders. Everything else (names, parameters, results) is shown as is,
but for the values sealed as declared secrets.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from dispatcher.crypto import is_sealed

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


def _secret_value(name: Any, value: Any, secret: Callable[[str], Any],
                  text: Callable[[str], str]) -> Any:
    if isinstance(name, str) and is_secret_name(name) and isinstance(value, str) \
            and not PLACEHOLDER.match(value.strip()):
        return secret(value)
    return _walk(value, True, secret, text)


def _walk(value: Any, in_env: bool, secret: Callable[[str], Any],
          text: Callable[[str], str]) -> Any:
    """A copy of ``value``: ``secret`` applied to each secret env value, ``text`` to
    every other string."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, list):
        return [_walk_pair(item, in_env, secret, text) if isinstance(item, dict)
                else _walk(item, in_env, secret, text) for item in value]
    if isinstance(value, dict):
        if in_env:
            return {key: _secret_value(key, item, secret, text) for key, item in value.items()}
        return {key: _walk(item, str(key).lower() in ENV_KEYS, secret, text)
                for key, item in value.items()}
    return value


def _walk_pair(item: dict[str, Any], in_env: bool, secret: Callable[[str], Any],
               text: Callable[[str], str]) -> dict[str, Any]:
    """``{"name": "API_KEY", "value": "..."}``: the value is secret when the name looks so."""
    name = item.get("name")
    if isinstance(name, str) and "value" in item:
        return {**_walk(item, False, secret, text),
                "value": _secret_value(name, item["value"], secret, text)}
    return dict(_walk(item, in_env, secret, text))


def _shown(text: str) -> str:
    return REDACTED if is_sealed(text) else redact_url(text)


def _hidden(_: str) -> str:
    return REDACTED


def redact_json(value: Any) -> Any:
    """A copy of ``value`` (JSON data) with secret env values, sealed values and URL
    credentials hidden."""
    return _walk(value, False, _hidden, _shown)


def map_secret_env(value: Any, secret: Callable[[str], Any]) -> Any:
    """A copy of ``value`` with ``secret`` applied to each env value whose name looks
    secret (the rule ``redact_json`` hides by), every other string left as it is."""
    return _walk(value, False, secret, _same)


def _same(text: str) -> str:
    return text


def hide_sealed(value: Any) -> Any:
    """A copy of ``value`` with every sealed string shown as ``***`` (parameters and other
    values whose secrets are declared, not named)."""
    if isinstance(value, str):
        return REDACTED if is_sealed(value) else value
    if isinstance(value, list):
        return [hide_sealed(item) for item in value]
    if isinstance(value, dict):
        return {key: hide_sealed(item) for key, item in value.items()}
    return value


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
        elif isinstance(value, dict):
            new = hide_sealed(value)
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
