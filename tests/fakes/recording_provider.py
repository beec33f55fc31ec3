"""An in-memory provider for engine tests: counts submits, and the test decides outcomes.

Registered as pool type ``recording`` by the tests that use it. Each submit is counted
per run (so "submitted exactly once" is checked at the provider), and ``STATE`` lets a
test make chosen runs fail with retryable or permanent errors, stay running, or finish.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from providers.base import (
    COMMON_VARIABLES,
    InfraPhase,
    InfraRef,
    InfraStatus,
    JobSpec,
    LogBatch,
    PermanentProviderError,
    ProviderConfig,
    ProvisionPlan,
    RetryableProviderError,
)


@dataclass
class RecordingState:
    submits: Counter[str] = field(default_factory=Counter)
    specs: dict[str, JobSpec] = field(default_factory=dict)
    submitted_at: dict[str, datetime] = field(default_factory=dict)  # the last submit call
    phases: dict[str, InfraPhase] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    retryable_failures: Counter[str] = field(default_factory=Counter)  # run id -> fails left
    permanent: dict[str, str] = field(default_factory=dict)  # run id -> error message
    default_phase: InfraPhase = InfraPhase.RUNNING
    cancels: list[str] = field(default_factory=list)
    hang: bool = False  # submits never answer (until cancelled)
    submitted_event: asyncio.Event | None = None
    connection: dict[str, Any] = field(default_factory=dict)  # what submit's InfraRef holds
    status_refs: list[InfraRef] = field(default_factory=list)  # what status calls were given
    on_logs: Callable[[], None] | None = None  # called at every logs call

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


STATE = RecordingState()


class RecordingConfig(ProviderConfig):
    model_config = {"extra": "allow"}


class RecordingProvider:
    pool_type: ClassVar[str] = "recording"
    config_model: ClassVar[type[ProviderConfig]] = RecordingConfig
    poll_interval: ClassVar[float] = 0.05

    def default_base_job_template(self) -> dict[str, Any]:
        return {"job_configuration": {"command": "{{ command }}", "env": "{{ env }}",
                                      "timeout": "{{ timeout }}"},
                "variables": {"type": "object", "properties": dict(COMMON_VARIABLES)}}

    def validate_config(self, config: Mapping[str, Any]) -> None:
        RecordingConfig.model_validate(dict(config))

    async def submit(self, spec: JobSpec) -> InfraRef:
        if STATE.hang:
            await asyncio.Event().wait()
        if spec.run_id in STATE.permanent:
            raise PermanentProviderError(STATE.permanent[spec.run_id])
        if STATE.retryable_failures[spec.run_id] > 0:
            STATE.retryable_failures[spec.run_id] -= 1
            raise RetryableProviderError("try again later", throttled=True)
        STATE.submits[spec.run_id] += 1
        STATE.specs[spec.run_id] = spec
        STATE.submitted_at[spec.run_id] = datetime.now(UTC)
        STATE.phases.setdefault(spec.run_id, STATE.default_phase)
        if STATE.submitted_event is not None:
            STATE.submitted_event.set()
        return InfraRef(infra_id=f"rec-{spec.run_id}", connection=dict(STATE.connection),
                        console_url=None)

    async def status(self, ref: InfraRef) -> InfraStatus:
        STATE.status_refs.append(ref)
        run_id = ref.infra_id.removeprefix("rec-")
        phase = STATE.phases.get(run_id, InfraPhase.MISSING)
        return InfraStatus(phase, STATE.exit_codes.get(run_id))

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        return {ref.infra_id: await self.status(ref) for ref in refs}

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        STATE.cancels.append(ref.infra_id)
        STATE.phases[ref.infra_id.removeprefix("rec-")] = InfraPhase.CANCELLED

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        if STATE.on_logs is not None:
            STATE.on_logs()
        return LogBatch([], cursor)

    async def cleanup(self, ref: InfraRef) -> None:
        return None

    async def provision(self, pool_name: str, options: Mapping[str, Any],
                        apply: bool) -> ProvisionPlan:
        return ProvisionPlan(target="memory", steps=[])

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool) -> ProvisionPlan:
        return ProvisionPlan(target="memory", steps=[])

    async def close(self) -> None:
        return None


PROVIDER = RecordingProvider()
