"""A provider that runs nothing (pool type ``noop``), for the dispatch benchmark.

Every submit is recorded and answered at once; every run is SUCCEEDED as soon as it is
asked about. The benchmark registers it with
``providers.registry.register_provider("noop", "bench.noop_provider")`` and reads
``PROVIDER.submissions`` to measure dispatch latency and to check that no run was
submitted twice (``PROVIDER.duplicates``). ``PUSHPOOL_NOOP_SUBMIT_SECONDS`` makes each submit
take that long after it is logged (a cloud that is slow to answer: bench/recovery.py kills
a server while its submits wait).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ConfigDict, ValidationError

from providers.base import (
    COMMON_VARIABLES,
    InfraPhase,
    InfraRef,
    InfraStatus,
    JobSpec,
    LogBatch,
    ProviderConfig,
    ProvisionPlan,
)


class NoopConfig(ProviderConfig):
    """Accepts any job configuration: the benchmark's templates are not this module's concern."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class RecordedSubmit:
    spec: JobSpec
    at: float  # time.monotonic() when submit was called


class NoopProvider:
    pool_type: ClassVar[str] = "noop"
    config_model: ClassVar[type[ProviderConfig]] = NoopConfig

    poll_interval: ClassVar[float] = 1.0

    def __init__(self, submit_latency: float = 0.0) -> None:
        self.submit_latency = submit_latency  # seconds; > 0 imitates a cloud API call
        # When set, each submit appends "<run id> <wall-clock time>" here, so a benchmark
        # in another process can measure dispatch latency against a real server.
        log_path = os.environ.get("PUSHPOOL_NOOP_SUBMIT_LOG")
        self._log = open(log_path, "a", buffering=1) if log_path else None
        self.submissions: list[RecordedSubmit] = []
        self.duplicates = 0  # submits of a job name already submitted (idempotent retries)
        self._seen: set[str] = set()

    def reset(self) -> None:
        self.submissions.clear()
        self.duplicates = 0
        self._seen.clear()

    def default_base_job_template(self) -> dict[str, Any]:
        return {
            "job_configuration": {"command": "{{ command }}", "env": "{{ env }}",
                                  "labels": "{{ labels }}"},
            "variables": {"type": "object", "properties": dict(COMMON_VARIABLES)},
        }

    def validate_config(self, config: Mapping[str, Any]) -> None:
        try:
            NoopConfig.model_validate(dict(config))
        except ValidationError as exc:
            raise ValueError(f"job_configuration: {exc}") from None

    async def submit(self, spec: JobSpec) -> InfraRef:
        self.submissions.append(RecordedSubmit(spec, time.monotonic()))
        if self._log is not None:
            self._log.write(f"{spec.run_id} {time.time():.6f}\n")
        if spec.job_name in self._seen:
            self.duplicates += 1
        self._seen.add(spec.job_name)
        if self.submit_latency > 0:
            await asyncio.sleep(self.submit_latency)
        return InfraRef(infra_id=f"noop-{spec.job_name}")

    async def status(self, ref: InfraRef) -> InfraStatus:
        return InfraStatus(InfraPhase.SUCCEEDED, 0)

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        return {ref.infra_id: InfraStatus(InfraPhase.SUCCEEDED, 0) for ref in refs}

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        return None

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        return LogBatch([], cursor)

    async def cleanup(self, ref: InfraRef) -> None:
        return None

    async def provision(self, pool_name: str, options: Mapping[str, Any],
                        apply: bool) -> ProvisionPlan:
        return ProvisionPlan(target="nowhere (noop)", steps=[])

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool) -> ProvisionPlan:
        return ProvisionPlan(target="nowhere (noop)", steps=[])

    async def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


PROVIDER = NoopProvider(float(os.environ.get("PUSHPOOL_NOOP_SUBMIT_SECONDS") or 0))
