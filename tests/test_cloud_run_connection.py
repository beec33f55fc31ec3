"""cloud-run:push clients: a cached client is found without a trip through the thread
pool, and its REST session reads the environment's proxy and CA settings once."""

from __future__ import annotations

import pytest
import requests

from providers.cloud_run.connection import Connection, GoogleClients, settle_session
from tests.fakes.cloud_run import FakeGoogle, shared_fake


@pytest.fixture
def fake() -> FakeGoogle:
    made = shared_fake()
    made.reset()
    return made


def emulated(fake: FakeGoogle) -> Connection:
    return Connection(project=fake.project, region=fake.region, endpoint=fake.url,
                      credential="anonymous")


def test_a_settled_session_keeps_the_proxy_and_bundle_the_environment_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "run.internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corporate.pem")
    session = settle_session(requests.Session(), "https://run.googleapis.com")
    assert session.trust_env is False
    assert session.proxies["https"] == "http://proxy.example:3128"
    assert session.verify == "/etc/ssl/corporate.pem"
    bypassed = settle_session(requests.Session(), "https://run.internal.example")
    assert "https" not in bypassed.proxies  # NO_PROXY names this host


async def test_the_run_clients_sessions_are_settled(fake: FakeGoogle) -> None:
    google = GoogleClients(2)
    try:
        client = await google.run_client(emulated(fake), "jobs")
        assert client.transport._session.trust_env is False
    finally:
        google.close()


async def test_a_cached_client_is_found_without_the_pool(fake: FakeGoogle) -> None:
    google = GoogleClients(2)
    conn = emulated(fake)
    try:
        made = await google.run_client(conn, "executions")  # made in the pool
        google._executor().shutdown(wait=True)  # any further trip through it would fail
        assert await google.run_client(conn, "executions") is made
    finally:
        google.close()
