"""Fixtures for the ECS adapter tests; load with ``pytest_plugins = ["tests.ecs_fixtures"]``.

One moto server with the ECS proxy in front (``tests/fakes/ecs_proxy.py``) runs per
session; each test starts from a reset moto with a cluster named ``CLUSTER`` and gets
an ``EcsProvider`` tuned for speed (tiny backoffs). boto3 reaches moto only through
``endpoint_url``; nothing in boto3 is patched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from providers.ecs import EcsProvider
from tests.fakes.ecs_testing import CLUSTER, REGION, Aws, fast_settings
from tests.fakes.moto_ecs import MotoEcs


@pytest.fixture(scope="session")
def moto_ecs() -> Iterator[MotoEcs]:
    server = MotoEcs.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ecs_aws(moto_ecs: MotoEcs, monkeypatch: pytest.MonkeyPatch) -> Aws:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_ECS"):
        monkeypatch.delenv(name, raising=False)
    # Safety net: a client made without an endpoint still reaches moto, never AWS.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_ecs.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    moto_ecs.reset()
    handle = Aws(moto_ecs)
    handle.client("ecs").create_cluster(clusterName=CLUSTER)
    return handle


@pytest.fixture
async def ecs_provider(ecs_aws: Aws) -> AsyncIterator[EcsProvider]:
    adapter = EcsProvider(fast_settings())
    adapter.task_definitions.backoff_base = 0.005
    adapter.task_definitions.backoff_cap = 0.02
    try:
        yield adapter
    finally:
        await adapter.close()
