"""The process provider in the conformance suite: real child processes on this host."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest

from providers.base import InfraPhase, InfraRef, JobSpec, Provider, job_name_for
from providers.process.adapter import ProcessProvider, status_from_exit
from tests.providers.harness import Job, MappingCase


class ProcessHarness:
    name = "process"
    package = "providers.process"
    sdk_modules: tuple[str, ...] = ()  # nothing to load: it is the embedded default

    def __init__(self, request: pytest.FixtureRequest):
        self.root: Path = request.getfixturevalue("tmp_path") / "runs"
        self.fault: str | None = None

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        return None

    def new_provider(self) -> Provider:
        return ProcessProvider()

    def job_spec(self, run_id: str, attempt: int, job: Job) -> JobSpec:
        script = "".join(f"echo {shlex.quote(line)}; " for line in job.lines)
        script += "exec sleep 60" if job.exit_code is None else f"exit {job.exit_code}"
        command = ["sh", "-c", script]
        if self.fault is not None:  # the host refuses to run it: a missing program
            command, self.fault = [self.fault], None
        return JobSpec(run_id=run_id, job_name=job_name_for(run_id, attempt), image=None,
                       command=command, env={}, attempt=attempt, pool_name="conformance",
                       config={"working_dir": str(self.root), "stream_output": True})

    async def advance(self, provider: Provider, ref: InfraRef) -> None:
        return None  # real processes move by themselves

    def bad_config(self) -> tuple[dict[str, Any], str]:
        return {"stream_output": "sometimes"}, "stream_output"

    def mapping_cases(self) -> list[MappingCase]:
        records: list[tuple[str, dict[str, Any], InfraPhase]] = [
            ("exit 0", {"exit_code": 0}, InfraPhase.SUCCEEDED),
            ("exit 3", {"exit_code": 3}, InfraPhase.FAILED),
            ("spawn error", {"exit_code": None, "error": "no such program"}, InfraPhase.FAILED),
            ("cancelled", {"exit_code": -15, "cancelled": True}, InfraPhase.CANCELLED),
            ("killed by a signal", {"exit_code": None, "signal": 9}, InfraPhase.CRASHED),
        ]
        return [MappingCase(native, status_from_exit(record), phase)
                for native, record, phase in records]

    def missing_ref(self) -> InfraRef:
        return InfraRef(str(self.root / f"never-{uuid.uuid4().hex[:8]}"))

    async def count_jobs(self, run_id: str) -> int:
        prefix = job_name_for(run_id, 1).rsplit("-", 1)[0]
        return sum(1 for path in self.root.iterdir() if path.name.startswith(prefix))

    async def inject_submit_fault(self, kind: Literal["retryable", "permanent"]) -> str:
        if kind == "permanent":
            self.fault = "/nonexistent/pushpool-conformance-program"
            return "pushpool-conformance-program"
        pytest.skip("a local process has no transient failure to inject: the host either "
                    "runs the program or refuses it")
