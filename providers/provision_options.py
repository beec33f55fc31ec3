"""The options an adapter's ``provision`` takes, declared so a command line can offer them.

Each adapter lists its ``provision_options`` (name, what it is, its kind, the choices and
the other names it answers to); ``parse_pairs`` turns ``KEY=VALUE`` text into the options
mapping ``provision`` receives, refusing a key the adapter does not take or a value of the
wrong kind with a ValueError that names the key and the fix. Secrets are never options:
each adapter reads them from its SDK's own environment when it provisions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("text", "int", "bool", "list")
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


@dataclass(frozen=True)
class ProvisionOption:
    name: str
    help: str
    kind: str = "text"  # text | int | bool | list (comma-separated)
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # other keys meaning the same (e.g. region for location)


def find(declared: Sequence[ProvisionOption], key: str) -> ProvisionOption | None:
    for option in declared:
        if key == option.name or key in option.aliases:
            return option
    return None


def convert(option: ProvisionOption, text: str) -> Any:
    """``text`` as the option's kind; ValueError naming the option otherwise."""
    value = text.strip()
    if option.choices and value not in option.choices:
        raise ValueError(f"{option.name}: {value!r} is not one of {', '.join(option.choices)}")
    if option.kind == "int":
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{option.name}: {value!r} is not a whole number") from None
    if option.kind == "bool":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{option.name}: {value!r} is not true or false")
    if option.kind == "list":
        if value.startswith("["):
            try:
                items = json.loads(value)
            except ValueError:
                raise ValueError(f"{option.name}: {value!r} is not a JSON list") from None
            return [str(item) for item in items]
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class UnknownOption(ValueError):
    """A key the adapter's provisioning does not take (the message lists those it does)."""


def _declared(declared: Sequence[ProvisionOption], key: str, what: str) -> ProvisionOption:
    option = find(declared, key)
    if option is None:
        names = ", ".join(o.name for o in declared) or "none"
        raise UnknownOption(f"{key}: {what} provisioning takes no such option; it takes: "
                         f"{names}")
    return option


def parse_pairs(declared: Sequence[ProvisionOption], pairs: Iterable[str],
                what: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as options by their declared names. ``what`` names the pool
    type in messages."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        option = _declared(declared, key, what)
        options[option.name] = convert(option, text)
    return options


def check_values(declared: Sequence[ProvisionOption], values: Mapping[str, Any],
                 what: str) -> dict[str, Any]:
    """A JSON object of options (an API body) by their declared names: text is read as
    ``parse_pairs`` reads it, a value already of the option's kind is kept, an empty or
    null one left out; the same ValueError words as ``parse_pairs`` otherwise."""
    options: dict[str, Any] = {}
    for key, value in values.items():
        option = _declared(declared, str(key), what)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            options[option.name] = convert(option, value)
        elif _of_kind(option, value):
            options[option.name] = list(map(str, value)) if option.kind == "list" else value
        else:
            words = _KIND_WORDS[option.kind]
            raise ValueError(f"{option.name}: {json.dumps(value)} is not {words}")
    return options


_KIND_WORDS = {"text": "text", "int": "a whole number", "bool": "true or false",
               "list": "a list"}


def _of_kind(option: ProvisionOption, value: Any) -> bool:
    if option.choices:
        return False  # only a string can be one of the choices
    if option.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if option.kind == "bool":
        return isinstance(value, bool)
    if option.kind == "list":
        return isinstance(value, list) and all(isinstance(v, str | int) for v in value)
    return False
