"""The (adapter, emulator) pairs the conformance suite runs against.

A new adapter joins by adding ``"tests.providers.<name>_harness:<Class>"`` to
``HARNESSES``; the class satisfies ``tests.providers.harness.ProviderHarness``.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator

import pytest

from tests.providers.harness import ProviderHarness

HARNESSES: list[str] = [
    "tests.providers.process_harness:ProcessHarness",
    "tests.providers.ecs_harness:EcsMotoHarness",
    "tests.providers.aci_harness:AciHarness",
    "tests.providers.cloud_run_harness:CloudRunHarness",
    "tests.providers.modal_harness:ModalHarness",
]


def _load(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@pytest.fixture(params=HARNESSES, ids=lambda p: p.rpartition(":")[2])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[ProviderHarness]:
    made: ProviderHarness = _load(request.param)(request)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()
