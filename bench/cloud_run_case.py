"""The Cloud Run adapter's case for ``bench/providers.py``: the real google-cloud-run
client (REST, in the adapter's thread pool) against the fake Google APIs in
``tests/fakes/cloud_run`` (plain HTTP on 127.0.0.1, stdlib threads). Executions run as
soon as they are made (``auto_start``): the figures are the adapter's and the fake's, not
Google's, which takes seconds to start a task.

    python bench/providers.py --only cloud-run:push
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench.providers import Target
from providers.base import InfraRef, JobSpec
from providers.cloud_run import CloudRunProvider
from tests.fakes.cloud_run import shared_fake
from tests.providers.cloud_run_harness import fast_settings, spec_for


@asynccontextmanager
async def cloud_run_target() -> AsyncIterator[Target]:
    fake = shared_fake()
    fake.reset()
    fake.run.auto_start = True
    # The run_job bucket off (Cloud Run's default quota is about 1 run_job a second):
    # this measures the adapter, not Google's quota.
    provider = CloudRunProvider(settings=fast_settings(max_workers=16))

    def make_spec(run_id: str) -> JobSpec:
        return spec_for(fake, run_id, deployment_id="bench")

    async def clean_up(refs: list[InfraRef]) -> None:
        fake.reset()

    try:
        yield Target(provider, make_spec, clean_up, runs=300, concurrency=32,
                     emulator="tests/fakes/cloud_run (HTTP, stdlib threads)")
    finally:
        await provider.close()


def case() -> dict[str, Any]:
    """What ``TARGETS`` takes: pool type -> the context manager."""
    return {"cloud-run:push": cloud_run_target}
