"""pytest fixtures for the ACI tests (loaded with ``pytest_plugins``): the shared fake
ARM reset for each test, with the tests' resource group, and an adapter reaching it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from providers.aci import AciProvider
from tests.fakes.azure import FakeAzure, shared_fake
from tests.providers.aci_harness import RESOURCE_GROUP, make_provider


@pytest.fixture
def aci_fake() -> FakeAzure:
    """The shared fake, reset, with the tests' resource group."""
    fake = shared_fake()
    fake.reset()
    fake.resources.add_resource_group(fake.subscription, RESOURCE_GROUP)
    return fake


@pytest.fixture
async def aci_provider(aci_fake: FakeAzure) -> AsyncIterator[AciProvider]:
    provider = make_provider()
    yield provider
    await provider.close()
