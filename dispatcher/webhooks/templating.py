"""A delivery's JSON body mapped to run parameters and an idempotency key by Jinja2
templates, rendered in a sandbox.

A template sees ``body`` (the parsed JSON), ``headers`` (lower-case names; the
Authorization and Cookie headers left out) and ``delivery_id``. The parameters template
renders JSON text that must be an object, e.g.
``{"ref": {{ body.ref | tojson }}, "sha": {{ body.after | tojson }}}``.

The environment is Jinja2's immutable sandbox: no attribute starting with an underscore
(so no ``__class__``, ``__globals__``, ``__subclasses__``: nothing of Python's internals),
no method that changes a value, ranges of at most 100,000 items. On top of it a value
that is undefined is an error rather than an empty string, repetition and powers are
bounded and the output is cut at a size, so a body crafted by a stranger cannot make a
template fill the server's memory. The templates are the webhook owner's; the body is
the stranger's, and it is only ever data to them. Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import (
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    pass_eval_context,
)
from jinja2.exceptions import SecurityError
from jinja2.filters import do_tojson
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT_CHARS = 256 * 1024
MAX_REPEAT_CHARS = 64 * 1024  # of a sequence made by '*'
MAX_EXPONENT = 64
HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class TemplateProblem(Exception):
    """A template that does not compile or does not render; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with '*' and '**' bounded (they are not by default)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"an exponent above {MAX_EXPONENT} is not allowed")
            return operator.pow(left, right)
        if isinstance(left, int) and isinstance(right, str | list | tuple):
            left, right = right, left
        if isinstance(left, str | list | tuple) and isinstance(right, int) \
                and len(left) * right > MAX_REPEAT_CHARS:
            raise SecurityError(f"a repetition longer than {MAX_REPEAT_CHARS} is not allowed")
        return operator.mul(left, right)


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
    """Jinja2's ``tojson``, but a name the body lacks is the error it is everywhere else
    (instead of json.dumps failing on the Undefined object)."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises, naming what is missing
    return do_tojson(eval_ctx, value, indent)


_ENV = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)
_ENV.filters["tojson"] = _tojson


@dataclass(frozen=True)
class DeliveryContext:
    body: Any
    headers: Mapping[str, str]
    delivery_id: str | None

    def variables(self) -> dict[str, Any]:
        shown = {name.lower(): value for name, value in self.headers.items()
                 if name.lower() not in HIDDEN_HEADERS}
        return {"body": self.body, "headers": shown, "delivery_id": self.delivery_id}


def compile_template(source: str, field: str) -> Template:
    """The compiled template, or ``TemplateProblem`` naming the line that is wrong."""
    try:
        return _compiled(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(field, f"line {exc.lineno}: {exc.message}") from None
    except TemplateError as exc:
        raise TemplateProblem(field, str(exc)) from None


@functools.lru_cache(maxsize=256)  # a hook's templates, compiled once, not per delivery
def _compiled(source: str) -> Template:
    return _ENV.from_string(source)


def render_text(source: str, field: str, context: DeliveryContext) -> str:
    template = compile_template(source, field)
    chunks: list[str] = []
    size = 0
    try:
        for chunk in template.generate(context.variables()):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateProblem(field, f"renders more than {MAX_OUTPUT_CHARS} "
                                             "characters")
            chunks.append(chunk)
    except TemplateProblem:
        raise
    except SecurityError as exc:
        raise TemplateProblem(field, f"refused by the sandbox: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(field, str(exc)) from None
    except Exception as exc:  # the owner's template failing on this body (1/0, int('x'))
        raise TemplateProblem(field, f"{type(exc).__name__}: {exc}") from None
    return "".join(chunks)


def render_parameters(source: str | None, context: DeliveryContext) -> dict[str, Any]:
    """The run's parameters: the template's JSON object, or without a template the
    body's ``parameters`` object (``{}`` when it has none)."""
    field = "parameters_template"
    if source is None:
        given = context.body.get("parameters", {}) if isinstance(context.body, dict) else {}
        if not isinstance(given, dict):
            raise TemplateProblem("parameters", "the body's 'parameters' must be a JSON "
                                                "object")
        return given
    text = render_text(source, field, context)
    try:
        rendered = json.loads(text)
    except ValueError as exc:
        raise TemplateProblem(field, f"rendered text that is not JSON ({exc}); write "
                                     "values with '| tojson'") from None
    if not isinstance(rendered, dict):
        raise TemplateProblem(field, f"rendered a JSON {type(rendered).__name__}, not an "
                                     "object of parameters")
    return rendered


def render_key(source: str | None, context: DeliveryContext, max_length: int) -> str | None:
    """The run's idempotency key, or None without a template."""
    if source is None:
        return None
    field = "idempotency_key_template"
    key = render_text(source, field, context).strip()
    if not key:
        raise TemplateProblem(field, "rendered an empty key; use a value every delivery "
                                     "of one event has, e.g. {{ body.id }}")
    if len(key) > max_length:
        raise TemplateProblem(field, f"rendered a key of {len(key)} characters, more than "
                                     f"{max_length}")
    return key
