"""A provider that wraps another and fails on purpose (pool type ``faulty``), for fault tests.

Registered by the tests that use it with ``registry.register_provider("faulty",
"tests.fakes.faulty_provider")``. It wraps the recording provider, so "submitted exactly
once" is counted at the inner provider (``recording_provider.STATE.submits``), and follows,
cancels and logs runs through it. ``FAULTS`` decides what each submit call meets:

- ``permanent[run_id]``: PermanentProviderError with that message, every time;
- ``hang_first[run_id] = n``: the run's first n calls never answer (a client timeout ends
  them), later ones go through untouched: a long, deterministic retry;
- ``down``: every call fails with RetryableProviderError (an outage), until set back;
- otherwise a share of calls fails at random: ``retryable_share`` with
  RetryableProviderError (every other one ``throttled``), ``hang_share`` hangs.

A run's fate is drawn from ``random.Random(f"{seed}:{run_id}:{n}")`` for its n-th call, so
it does not depend on how the calls of many runs interleave. Faults strike before the call
reaches the inner provider (the request never arrived), so a retry can never make a second
job there; every call is logged in ``FAULTS.calls`` with its time and outcome.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from providers.base import (
    InfraRef,
    InfraStatus,
    JobSpec,
    LogBatch,
    PermanentProviderError,
    Provider,
    ProviderConfig,
    ProvisionPlan,
    RetryableProviderError,
)
from tests.fakes import recording_provider


@dataclass(frozen=True)
class Call:
    run_id: str
    at: float  # time.monotonic() when the call arrived
    outcome: str  # "submitted" | "retryable" | "throttled" | "hang" | "permanent" | "down"


@dataclass
class Faults:
    retryable_share: float = 0.0
    hang_share: float = 0.0
    permanent: dict[str, str] = field(default_factory=dict)
    hang_first: Counter[str] = field(default_factory=Counter)
    down: bool = False
    seed: int = 0
    calls: list[Call] = field(default_factory=list)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def calls_of(self, run_id: str) -> list[Call]:
        return [c for c in self.calls if c.run_id == run_id]

    def fate(self, run_id: str) -> str:
        made = sum(1 for c in self.calls if c.run_id == run_id)
        if run_id in self.permanent:
            return "permanent"
        if self.down:
            return "down"
        if run_id in self.hang_first:
            return "hang" if made < self.hang_first[run_id] else "submitted"
        draw = random.Random(f"{self.seed}:{run_id}:{made}").random()
        if draw < self.retryable_share:
            return "throttled" if made % 2 else "retryable"
        if draw < self.retryable_share + self.hang_share:
            return "hang"
        return "submitted"


FAULTS = Faults()


class FaultyProvider:
    pool_type: ClassVar[str] = "faulty"
    config_model: ClassVar[type[ProviderConfig]] = recording_provider.RecordingConfig
    poll_interval: ClassVar[float] = recording_provider.RecordingProvider.poll_interval

    def __init__(self, inner: Provider):
        self.inner = inner

    def default_base_job_template(self) -> dict[str, Any]:
        return self.inner.default_base_job_template()

    def validate_config(self, config: Mapping[str, Any]) -> None:
        self.inner.validate_config(config)

    async def submit(self, spec: JobSpec) -> InfraRef:
        fate = FAULTS.fate(spec.run_id)
        FAULTS.calls.append(Call(spec.run_id, time.monotonic(), fate))
        if fate == "permanent":
            raise PermanentProviderError(FAULTS.permanent[spec.run_id])
        if fate == "down":
            raise RetryableProviderError("503 Service Unavailable: the provider is down")
        if fate in ("retryable", "throttled"):
            raise RetryableProviderError(f"{fate}: try again later",
                                         throttled=fate == "throttled")
        if fate == "hang":
            await asyncio.Event().wait()  # until the client's timeout cancels the call
        return await self.inner.submit(spec)

    async def status(self, ref: InfraRef) -> InfraStatus:
        return await self.inner.status(ref)

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        return await self.inner.status_many(refs)

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        await self.inner.cancel(ref, grace_seconds)

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        return await self.inner.logs(ref, cursor)

    async def cleanup(self, ref: InfraRef) -> None:
        await self.inner.cleanup(ref)

    async def provision(self, pool_name: str, options: Mapping[str, Any],
                        apply: bool) -> ProvisionPlan:
        return await self.inner.provision(pool_name, options, apply)

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool) -> ProvisionPlan:
        return await self.inner.deprovision(pool_name, provisioned, apply)

    async def close(self) -> None:
        await self.inner.close()


PROVIDER = FaultyProvider(recording_provider.PROVIDER)
