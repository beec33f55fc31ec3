"""Fixtures for the cloud-function tests; load with
``pytest_plugins = ["tests.serverless_fixtures"]``.

``trigger_env`` points the container host (dispatcher/triggers/host.py) at the test's store
(SQLite, allowed explicitly, and the local PostgreSQL server), with the API token set and
the recording provider registered, and closes the host afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from dispatcher.settings import get_settings
from dispatcher.store import Database
from dispatcher.triggers.host import reset_host
from tests.fakes.recording_provider import STATE
from tests.serverless_samples import API_TOKEN


@pytest.fixture
def trigger_env(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    from providers.base import InfraPhase

    monkeypatch.setenv("PUSHPOOL_DATABASE_URL", db.url)
    monkeypatch.setenv("PUSHPOOL_TICK_ALLOW_SQLITE", "1")
    monkeypatch.setenv("PUSHPOOL_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("PUSHPOOL_EXTRA_PROVIDERS",
                       json.dumps({"recording": "tests.fakes.recording_provider"}))
    get_settings.cache_clear()
    STATE.reset()
    STATE.default_phase = InfraPhase.RUNNING
    try:
        yield db
    finally:
        reset_host()
        get_settings.cache_clear()
