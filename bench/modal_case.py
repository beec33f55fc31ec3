"""The Modal adapter's case for ``bench/providers.py``: the real ``modal`` client, over
its own gRPC protocol, against the fake Modal server (grpclib on 127.0.0.1). A sandbox
is RUNNING as soon as it is created, as on Modal once it is scheduled; the figures are
the adapter's, the client's and the fake's, not Modal's scheduling time.

    python bench/providers.py --only modal:push
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench.providers import Target
from providers.base import InfraRef, JobSpec
from providers.modal import ModalProvider
from tests.fakes.modal import shared_fake
from tests.providers.modal_harness import TOKEN_ID, TOKEN_SECRET, fast_settings, spec_for


@asynccontextmanager
async def modal_target() -> AsyncIterator[Target]:
    fake = shared_fake()
    fake.reset()
    fake.require_tokens({TOKEN_ID: TOKEN_SECRET})
    provider = ModalProvider(settings=fast_settings())

    def make_spec(run_id: str) -> JobSpec:
        return spec_for(fake, run_id)

    async def clean_up(refs: list[InfraRef]) -> None:
        fake.reset()

    try:
        yield Target(provider, make_spec, clean_up, runs=300, concurrency=32,
                     emulator="tests/fakes/modal (grpclib, its own loop thread)")
    finally:
        await provider.close()


def case() -> dict[str, Any]:
    """What ``TARGETS`` takes: pool type -> the context manager."""
    return {"modal:push": modal_target}
