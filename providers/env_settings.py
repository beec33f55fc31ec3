"""Adapter tunables from ``PUSHPOOL_<ADAPTER>_<FIELD>`` environment variables.

Each adapter keeps its tunables in a frozen dataclass of plain defaults (int, float,
str, or None for text left unset); this reads the ones set in the environment,
converted to the default's type, with an error that names the variable and the type.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any


def values_from_env(settings_class: type, prefix: str,
                    environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields of ``settings_class`` set as ``{prefix}{FIELD}``, by field name."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(settings_class):
        name = f"{prefix}{f.name.upper()}"
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        kind: Any = str if f.default is None else type(f.default)  # None: unset text
        try:
            values[f.name] = kind(raw)
        except ValueError:
            raise ValueError(f"{name}: {raw!r} is not a {kind.__name__}") from None
    return values
