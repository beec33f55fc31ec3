"""Which stored values are secrets, and the walks that seal and open them (pure).

A string is sealed at rest (``dispatcher.crypto``) when:

- a JSON Schema declares it secret, ``"writeOnly": true`` or ``"format": "password"`` (what
  pydantic writes for ``SecretStr``): flow parameters against the deployment's parameter
  schema, job variables and the variables' defaults against the pool's variables;
- it is an environment value whose name looks secret (``dispatcher.redaction``'s rule);
- it is a string of a rendered job configuration that holds a secret job-variable value
  (a placeholder put it there);
- it sits under a secret-looking key of a run's infrastructure connection.

Sealed strings carry a prefix, so opening needs no schema: ``open_json`` opens every one.
Strings holding a template placeholder (``"{{ token }}"``) and empty strings stay clear, so
a template read back from the API still renders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dispatcher import redaction, templates
from dispatcher.crypto import SecretBox, is_sealed
from dispatcher.errors import InvalidInput

Seal = Callable[[str], str]
# A secret this long is sealed wherever a rendered string holds it, not only where it is
# the whole string (a shorter one would match innocent text).
MIN_EMBEDDED_SECRET = 8


def sealer(box: SecretBox) -> Seal:
    """Seals a clear string once; sealed, empty and placeholder strings pass unchanged."""
    def seal(text: str) -> str:
        if not text or is_sealed(text) or templates.PLACEHOLDER.search(text):
            return text
        return box.seal(text)

    return seal


def open_json(value: Any, box: SecretBox) -> Any:
    """A copy of ``value`` with every sealed string opened (SecretDecryptError if a
    string cannot be opened with the box's keys)."""
    if isinstance(value, str):
        return box.open(value) if is_sealed(value) else value
    if isinstance(value, list):
        return [open_json(item, box) for item in value]
    if isinstance(value, dict):
        return {key: open_json(item, box) for key, item in value.items()}
    return value


def reseal_json(value: Any, box: SecretBox) -> tuple[Any, bool]:
    """``value`` with each string sealed under an older key sealed again under the first
    one, and whether anything changed (key rotation)."""
    if isinstance(value, str):
        if is_sealed(value) and not box.sealed_with_first(value):
            return box.reseal(value), True
        return value, False
    if isinstance(value, list):
        pairs = [reseal_json(item, box) for item in value]
        return [p[0] for p in pairs], any(p[1] for p in pairs)
    if isinstance(value, dict):
        done = {key: reseal_json(item, box) for key, item in value.items()}
        return {k: p[0] for k, p in done.items()}, any(p[1] for p in done.values())
    return value, False


# ---------------------------------------------------------------------------- schemas


def _resolve(schema: Any, root: Any) -> Any:
    """``schema`` with local ``$ref``s (``#/$defs/...``, as pydantic writes) followed."""
    for _ in range(32):  # a cycle of references ends here
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        schema = target
    return schema


def _branches(schema: Any, root: Any) -> list[dict[str, Any]]:
    """The schema and the alternatives it allows (``anyOf``: ``SecretStr | None``)."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return []
    found = [schema]
    for keyword in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(keyword) or []:
            found.extend(_branches(branch, root))
    return found


def declares_secret(schema: Any, root: Any = None) -> bool:
    return any(b.get("writeOnly") is True or b.get("format") == "password"
               for b in _branches(schema, schema if root is None else root))


def _seal_strings(value: Any, seal: Seal, field: str | None) -> Any:
    if isinstance(value, str):
        if field is not None and value == redaction.REDACTED:
            raise InvalidInput(field, f"is {redaction.REDACTED!r}, the placeholder the API "
                               "shows instead of a secret", "send the real value")
        return seal(value)
    if isinstance(value, list):
        return [_seal_strings(item, seal, field and f"{field}[{i}]")
                for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _seal_strings(item, seal, field and f"{field}.{key}")
                for key, item in value.items()}
    return value


def seal_declared(value: Any, schema: Any, seal: Seal, *, root: Any = None,
                  field: str | None = None) -> Any:
    """A copy of ``value`` with the strings its schema declares secret sealed. With a
    ``field``, a declared secret sent as ``***`` is refused (InvalidInput naming it)."""
    root = schema if root is None else root
    branches = _branches(schema, root)
    if value is None or not branches:
        return value
    if any(b.get("writeOnly") is True or b.get("format") == "password" for b in branches):
        return _seal_strings(value, seal, field)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            subs = [b["properties"][key] for b in branches
                    if isinstance(b.get("properties"), dict) and key in b["properties"]]
            if not subs:
                subs = [b["additionalProperties"] for b in branches
                        if isinstance(b.get("additionalProperties"), dict)]
            for sub in subs:
                item = seal_declared(item, sub, seal, root=root,
                                     field=field and f"{field}.{key}")
            out[key] = item
        return out
    if isinstance(value, list):
        subs = [b["items"] for b in branches if isinstance(b.get("items"), dict)]
        items = list(value)
        for sub in subs:
            items = [seal_declared(item, sub, seal, root=root,
                                   field=field and f"{field}[{i}]")
                     for i, item in enumerate(items)]
        return items
    return value


def seal_schema_defaults(schema: dict[str, Any], seal: Seal, *,
                         field: str | None = None) -> dict[str, Any]:
    """An object schema whose properties' defaults have their declared secrets sealed."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    sealed = {}
    for name, prop in properties.items():
        if isinstance(prop, dict) and prop.get("default") is not None:
            prop = {**prop, "default": seal_declared(
                prop["default"], prop, seal, root=schema,
                field=field and f"{field}.properties.{name}.default")}
        sealed[name] = prop
    return {**schema, "properties": sealed}


# ---------------------------------------------------------------------------- what is stored


def seal_template(template: dict[str, Any], seal: Seal, *,
                  field: str | None = "base_job_template") -> dict[str, Any]:
    """A pool's base job template with its secret defaults and secret env values sealed."""
    variables = template.get("variables")
    if isinstance(variables, dict):
        template = {**template, "variables": seal_schema_defaults(
            variables, seal, field=field and f"{field}.variables")}
    return dict(redaction.map_secret_env(template, seal))


def seal_job_variables(values: dict[str, Any], variables_schema: dict[str, Any], seal: Seal,
                       *, field: str | None = "job_variables") -> dict[str, Any]:
    """Job variables with what the pool's schema declares secret, and secret env values,
    sealed."""
    declared = seal_declared(values, variables_schema, seal, field=field)
    return dict(redaction.map_secret_env(declared, seal))


def seal_parameters(values: dict[str, Any], parameter_schema: dict[str, Any] | None,
                    seal: Seal, *, field: str | None = "parameters") -> dict[str, Any]:
    """Flow parameters with those the flow declares secret (``SecretStr``) sealed."""
    if not parameter_schema:
        return values
    return dict(seal_declared(values, parameter_schema, seal, field=field))


def seal_job_configuration(config: dict[str, Any], merged_variables: dict[str, Any],
                           variables_schema: dict[str, Any], seal: Seal) -> dict[str, Any]:
    """A rendered job configuration with secret env values sealed, and every string that
    holds one of the secret job variables' values."""
    secrets: set[str] = set()

    def remember(text: str) -> str:
        if text and not is_sealed(text):
            secrets.add(text)
        return text

    seal_job_variables(merged_variables, variables_schema, remember, field=None)
    embedded = [s for s in secrets if len(s) >= MIN_EMBEDDED_SECRET]

    def holds_secret(value: Any) -> Any:
        if isinstance(value, str):
            if value in secrets or any(s in value for s in embedded):
                return seal(value)
            return value
        if isinstance(value, list):
            return [holds_secret(item) for item in value]
        if isinstance(value, dict):
            return {key: holds_secret(item) for key, item in value.items()}
        return value

    return dict(holds_secret(redaction.map_secret_env(config, seal)))


def seal_connection(connection: dict[str, Any], seal: Seal) -> dict[str, Any]:
    """An ``InfraRef.connection`` with the values under secret-looking keys sealed
    (``client_secret``, ``key_json``, ``token_secret``)."""
    def walk(value: Any, secret: bool) -> Any:
        if isinstance(value, str):
            return seal(str(value)) if secret else value
        if isinstance(value, list):
            return [walk(item, secret) for item in value]
        if isinstance(value, dict):
            return {key: walk(item, secret or redaction.is_secret_name(str(key)))
                    for key, item in value.items()}
        return value

    return dict(walk(connection, False))
