"""Base job templates: validate a pool's template, merge and check job variables, render.

A pool's ``base_job_template`` is ``{"job_configuration": {...}, "variables": <JSON Schema>}``.
Placeholders ``{{ name }}`` in the job configuration are filled from the job variables:
schema defaults < deployment ``job_variables`` < run ``job_variables``. Pure, no I/O.

Where this differs from Prefect on purpose:

- A job variable that the schema does not declare is an error that lists the accepted names;
  it is never dropped silently. ``resolve_job`` returns the merged variables next to the rendered
  configuration, so a declared variable reaches the dispatcher even when no placeholder uses it
  (Prefect issue #20131).
- Malformed placeholders (``"{{ cpu"``, ``"{{ 1abc }}"``) are rejected when the pool is saved,
  with the JSON path of the string, instead of being rendered literally.
- ``None`` means "unset": it never fails a type check, and an unset variable removes its key
  (whole-value placeholder) or renders as ``""`` (embedded placeholder).
- Error messages describe what the schema expects and never echo the value, which may be secret.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # jsonschema loads when a template or variables are checked, not for a tick
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# What is left of "{{" / "}}" once the valid placeholders are taken out of a string.
_LEFTOVER_BRACES = re.compile(r"\{\{.*?(?:\}\}|$)|\}\}")
_PLACEHOLDER_RULE = (
    "write placeholders as '{{ name }}', where name is letters, digits and '_' "
    "and does not start with a digit"
)
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object", type(None): "null"}
_BOUNDS = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
_SIZES = {"minLength": "at least", "maxLength": "at most", "minItems": "at least",
          "maxItems": "at most"}


class TemplateError(ValueError):
    """A template or job variable is wrong: ``field`` is its dotted path, ``fix`` what to do."""

    def __init__(self, field: str, message: str, fix: str):
        super().__init__(f"{field}: {message}; {fix}")
        self.field = field
        self.message = message
        self.fix = fix


# ---------------------------------------------------------------------------- placeholders


def _child(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


def _strings(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string value in a JSON-like structure, with its path."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(value, _child(path, str(key)))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _strings(value, _child(path, index))


def find_placeholders(obj: Any) -> set[str]:
    """The variable names used by ``{{ name }}`` placeholders anywhere in ``obj``."""
    return {name for _, text in _strings(obj, "") for name in PLACEHOLDER.findall(text)}


# ---------------------------------------------------------------------------- pool templates


def validate_base_job_template(template: Any, field: str = "base_job_template") -> None:
    """Raise ``TemplateError`` unless ``template`` is a usable base job template."""
    shape_fix = 'send {"job_configuration": {...}, "variables": {"type": "object", ...}}'
    if not isinstance(template, dict):
        raise TemplateError(field, "must be an object", shape_fix)
    for key in ("job_configuration", "variables"):
        if key not in template:
            raise TemplateError(f"{field}.{key}", "is missing", shape_fix)
        if not isinstance(template[key], dict):
            raise TemplateError(f"{field}.{key}", "must be an object", shape_fix)
    job_configuration, variables = template["job_configuration"], template["variables"]
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError, best_match

    try:
        Draft202012Validator.check_schema(variables)
    except SchemaError as err:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path)
        raise TemplateError(f"{field}.variables{path}", f"is not valid JSON Schema: {err.message}",
                            "fix the schema (JSON Schema draft 2020-12)") from None
    if variables.get("type") != "object" or not isinstance(variables.get("properties"), dict):
        raise TemplateError(f"{field}.variables",
                            "must be a JSON Schema of type 'object' with 'properties'",
                            'declare each variable under "properties", e.g. '
                            '{"type": "object", "properties": {"cpu": {"type": "integer"}}}')
    properties: dict[str, Any] = variables["properties"]

    for path, text in _strings(job_configuration, f"{field}.job_configuration"):
        leftover = _LEFTOVER_BRACES.search(PLACEHOLDER.sub("", text))
        if leftover:
            raise TemplateError(path, f"malformed placeholder {leftover.group(0)[:40]!r}",
                                _PLACEHOLDER_RULE)
        for name in PLACEHOLDER.findall(text):
            if name not in properties:
                raise TemplateError(path, f"undeclared variable {name!r}",
                                    f"declare it in {field}.variables.properties "
                                    "or remove the placeholder")

    validator = Draft202012Validator(variables)
    for name, schema in properties.items():
        if isinstance(schema, dict) and schema.get("default") is not None:
            error = best_match(validator.evolve(schema=schema).iter_errors(schema["default"]))
            if error is not None:
                raise TemplateError(f"{field}.variables.properties.{name}.default",
                                    f"the default {_expectation(error)}",
                                    "change the default so that it matches the property's schema")


def schema_defaults(variables_schema: dict[str, Any]) -> dict[str, Any]:
    """The properties' ``default`` values; a ``None`` default means no default."""
    return {name: copy.deepcopy(schema["default"])
            for name, schema in variables_schema.get("properties", {}).items()
            if isinstance(schema, dict) and schema.get("default") is not None}


# ---------------------------------------------------------------------------- job variables


def merge_job_variables(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win. ``env`` is merged key by key, and a ``None`` in it removes the key;
    every other variable is replaced whole. ``None`` values mean unset and are left out."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in copy.deepcopy(layer).items():
            if key == "env" and isinstance(value, dict):
                lower = merged.get("env")
                env = {**(lower if isinstance(lower, dict) else {}), **value}
                merged["env"] = {k: v for k, v in env.items() if v is not None}
            else:
                merged[key] = value
    return {key: value for key, value in merged.items() if value is not None}


def validate_job_variables(variables_schema: dict[str, Any], values: dict[str, Any], *,
                           enforce_required: bool, field: str = "job_variables") -> None:
    """Raise ``TemplateError`` for the first unknown, invalid or (if enforced) missing variable.

    ``None`` values (and ``None`` entries in ``env``) mean "unset" and are not type-checked.
    """
    if not isinstance(values, dict):
        raise TemplateError(field, "must be an object", 'send e.g. {"cpu": 1024}')
    properties: dict[str, Any] = variables_schema.get("properties", {})

    unknown = sorted(set(values) - set(properties))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, properties, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TemplateError(_child(field, name), f"unknown variable {name!r}",
                            f"{hint}the pool accepts: {', '.join(sorted(properties)) or 'none'}")

    from jsonschema.exceptions import best_match

    validators = _property_validators(json.dumps(variables_schema, sort_keys=True))
    for name, value in values.items():
        if name == "env" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        if value is None:
            continue
        error = best_match(validators[name].iter_errors(value))
        if error is not None:
            path = _child(field, name)
            for part in error.absolute_path:
                path = _child(path, part)
            raise TemplateError(path, _expectation(error),
                                f"set a value that matches variables.properties.{name} "
                                "in the pool's base job template")

    if enforce_required:
        for name in variables_schema.get("required", []):
            if values.get(name) is None:
                raise TemplateError(_child(field, name), f"required variable {name!r} is not set",
                                    "set it in the deployment's or the run's job_variables, "
                                    "or give it a default in the pool's base job template")


def _expectation(error: ValidationError) -> str:
    """What the schema wanted, without echoing the value (it may be a secret)."""
    rule, expected = error.validator, error.validator_value
    if rule == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        got = _JSON_TYPES.get(type(error.instance), type(error.instance).__name__)
        return f"must be of type {wanted}, got {got}"
    if rule in _BOUNDS:
        return f"must be {_BOUNDS[str(rule)]} {expected}"
    if rule == "enum":
        return f"must be one of {json.dumps(expected)}"
    if rule == "const":
        return f"must be {json.dumps(expected)}"
    if rule == "pattern":
        return f"must match the pattern {expected!r}"
    if rule in _SIZES:
        unit = "items" if "Items" in str(rule) else "characters"
        return f"must have {_SIZES[str(rule)]} {expected} {unit}"
    if rule in ("required", "additionalProperties", "propertyNames"):
        return str(error.message)  # names keys, not values
    if rule in ("anyOf", "oneOf") and isinstance(expected, list):
        return f"must match one of: {', '.join(_short(s) for s in expected)}"
    return f"does not match the schema ({rule}: {json.dumps(expected, default=str)[:200]})"


def _short(schema: Any) -> str:
    if isinstance(schema, dict) and "type" in schema:
        return str(schema["type"])
    if isinstance(schema, dict) and "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return json.dumps(schema, default=str)[:80]


# ---------------------------------------------------------------------------- rendering

_UNSET = object()


def render_job_configuration(job_configuration: dict[str, Any],
                             values: dict[str, Any]) -> dict[str, Any]:
    """A new job configuration with every placeholder filled from ``values``.

    ``"{{ cpu }}"`` alone becomes the value itself (type kept); a placeholder inside a longer
    string is formatted in (dicts and lists as compact JSON). An unset (missing or ``None``)
    whole-value placeholder drops its key or list item; an embedded one becomes ``""``.
    Values are inserted as they are: placeholders inside values are not expanded again.
    """
    rendered = _render(job_configuration, values)
    return rendered if isinstance(rendered, dict) else {}


def _render(obj: Any, values: dict[str, Any]) -> Any:
    if isinstance(obj, dict):
        pairs = ((key, _render(value, values)) for key, value in obj.items())
        return {key: value for key, value in pairs if value is not _UNSET}
    if isinstance(obj, list):
        items = (_render(item, values) for item in obj)
        return [item for item in items if item is not _UNSET]
    if isinstance(obj, str):
        whole = PLACEHOLDER.fullmatch(obj)
        if whole:
            value = values.get(whole.group(1))
            return _UNSET if value is None else copy.deepcopy(value)
        return PLACEHOLDER.sub(lambda match: _format(values.get(match.group(1))), obj)
    return copy.deepcopy(obj)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


@functools.lru_cache(maxsize=512)
def _validate_template_cached(template_json: str) -> None:
    # A pool's template is checked once per content, not once per run (hot path).
    validate_base_job_template(json.loads(template_json))


@functools.lru_cache(maxsize=512)
def _property_validators(schema_json: str) -> dict[str, Draft202012Validator]:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_json)
    base = Draft202012Validator(schema)
    return {name: base.evolve(schema=prop)
            for name, prop in schema.get("properties", {}).items()}


def resolve_job(base_job_template: dict[str, Any], deployment_vars: dict[str, Any],
                run_vars: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(merged job variables, rendered job configuration) for one run.

    Merged = schema defaults < deployment variables < run variables. The merged variables hold
    every declared variable that has a value, whether or not a placeholder uses it.
    """
    # The dispatcher resolves the same few (template, overrides) for many runs: memoised
    # by content, and copied out so no caller can change the cached answer.
    key = json.dumps([base_job_template, deployment_vars, run_vars], sort_keys=True,
                     default=str)
    merged, rendered = _resolve_job_cached(key)
    return copy.deepcopy(merged), copy.deepcopy(rendered)


@functools.lru_cache(maxsize=1024)
def _resolve_job_cached(key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    base_job_template, deployment_vars, run_vars = json.loads(key)
    return _resolve_job(base_job_template, deployment_vars, run_vars)


def _resolve_job(base_job_template: dict[str, Any], deployment_vars: dict[str, Any],
                 run_vars: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    _validate_template_cached(json.dumps(base_job_template, sort_keys=True))
    schema = base_job_template["variables"]
    validate_job_variables(schema, deployment_vars, enforce_required=False)
    validate_job_variables(schema, run_vars, enforce_required=False)
    merged = merge_job_variables(schema_defaults(schema), deployment_vars, run_vars)
    validate_job_variables(schema, merged, enforce_required=True)
    return merged, render_job_configuration(base_job_template["job_configuration"], merged)
