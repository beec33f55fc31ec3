"""Reading a request body as JSON within limits: strict JSON, and at most 64 levels deep.

The size limit (1 MiB, a 413) is aiohttp's ``client_max_size``. Depth is checked on the raw
bytes before parsing, so a body of 10,000 nested brackets is refused without building it
(Python's parser would hit its recursion limit, and everything after it — validation,
JSON Schema checks, the store — walks nested data recursively too). NaN, Infinity and
numbers too large for a float are not JSON: PostgreSQL refuses them and time arithmetic
overflows on them, so they are refused here with the rest of the malformed bodies.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

from dispatcher.errors import InvalidInput

MAX_JSON_DEPTH = 64

# A JSON string, escapes included ("unrolled" so that long strings scan in linear time).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class NotJson(ValueError):
    """The body is not strict JSON; the message says what is wrong."""


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in ``raw`` (brackets inside strings ignored),
    or when that cannot exceed MAX_JSON_DEPTH, an upper bound of it."""
    opening = raw.count(b"[") + raw.count(b"{")
    if opening <= MAX_JSON_DEPTH:  # the common case: too few brackets to nest too deep
        return opening
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _no_constant(name: str) -> Any:
    raise NotJson(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise NotJson(f"the number {text[:20]}... is too large for a float")
    return number


def loads(raw: bytes) -> Any:
    """The parsed body (``{}`` when empty). Raises ``NotJson`` or ``InvalidInput`` (too deep)."""
    if not raw.strip():
        return {}
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise InvalidInput("body", f"JSON nests {depth} levels deep, more than the limit of "
                           f"{MAX_JSON_DEPTH}", "send flatter data")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except NotJson:
        raise
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, too many digits
        raise NotJson(str(exc)) from None
