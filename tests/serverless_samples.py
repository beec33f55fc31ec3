"""The documented events of tests/fixtures/serverless, and the API token the tests use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "serverless"
API_TOKEN = "serverless-test-token"


def sample(name: str, **replace: str) -> Any:
    """A documented event from tests/fixtures/serverless, with placeholders filled."""
    text = (FIXTURES / name).read_text()
    for key, value in replace.items():
        text = text.replace(key, value)
    return json.loads(text)
