"""The ACI adapter's case for ``bench/providers.py``: the real azure-mgmt-containerinstance
and azure-identity clients against the fake ARM (HTTPS on 127.0.0.1, a service principal
signing in at the fake's token endpoint). Groups start as soon as they are read once
(``auto_start=0``): the figures are the adapter's and the fake's, not Azure's, which takes
tens of seconds to pull and start a container.

    python bench/providers.py --only azure-container-instance:push
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench.providers import Target
from providers.aci import AciProvider
from providers.base import InfraRef, JobSpec
from tests.fakes.azure import shared_fake
from tests.providers.aci_harness import RESOURCE_GROUP, fast_settings, spec_for


@asynccontextmanager
async def aci_target() -> AsyncIterator[Target]:
    fake = shared_fake()
    fake.reset()
    fake.resources.add_resource_group(fake.subscription, RESOURCE_GROUP)
    fake.aci.auto_start = 0.0
    # The create budget off (ACI allows 100 creates per 5 minutes): this measures the
    # adapter, not Azure's quota. Reads stay budgeted as in production.
    provider = AciProvider(settings=fast_settings(creates_per_5min=10**9,
                                                  creates_per_hour=10**9,
                                                  read_rate=1e6, read_burst=1e6))

    def make_spec(run_id: str) -> JobSpec:
        return spec_for(fake, run_id)

    async def clean_up(refs: list[InfraRef]) -> None:
        fake.reset()

    try:
        yield Target(provider, make_spec, clean_up, runs=300, concurrency=32,
                     emulator="tests/fakes/azure (HTTPS, stdlib threads)")
    finally:
        await provider.close()


def case() -> dict[str, Any]:
    """What ``TARGETS`` takes: pool type -> the context manager."""
    return {"azure-container-instance:push": aci_target}
