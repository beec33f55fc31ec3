"""The Cloud Run adapter in the conformance suite: the real google-cloud-run and
google-cloud-logging clients (REST) against the fake Google APIs in
``tests.fakes.cloud_run``, reached through the pool's ``api_endpoint`` (an http://
loopback endpoint, so anonymous credentials).

Also the helpers the ``tests/test_cloud_run_*.py`` files share: ``cloud_run_config`` (a
valid rendered job configuration reaching the fake), ``fast_settings``,
``make_provider``, ``spec_for`` and ``mapping_cases``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import pytest

from providers.base import InfraPhase, InfraRef, JobSpec, Provider
from providers.cloud_run import CloudRunProvider, CloudRunSettings
from providers.cloud_run.connection import Connection
from providers.cloud_run.jobs import ATTEMPT_ENV, RUN_ENV, execution_env
from providers.cloud_run.status import execution_status
from tests.fakes.cloud_run import FakeGoogle, shared_fake
from tests.providers.harness import Job, MappingCase

IMAGE = "us-docker.pkg.dev/cloudrun/container/job:latest"


def cloud_run_config(fake: FakeGoogle, **overrides: Any) -> dict[str, Any]:
    """A rendered job configuration that reaches ``fake``."""
    config: dict[str, Any] = {"project": fake.project, "region": fake.region,
                              "api_endpoint": fake.url, "image": IMAGE}
    config.update(overrides)
    return config


def fast_settings(**overrides: Any) -> CloudRunSettings:
    values: dict[str, Any] = {"run_job_rate": 1e6, "run_job_burst": 1e6,
                              "backoff_base": 0.01, "backoff_cap": 0.05,
                              "lro_poll_initial": 0.01, "log_read_rate": 1e6,
                              "log_read_burst": 1e6, "max_workers": 8}
    values.update(overrides)
    return CloudRunSettings(**values)


def make_provider(**overrides: Any) -> CloudRunProvider:
    return CloudRunProvider(settings=fast_settings(**overrides))


def spec_for(fake: FakeGoogle, run_id: str, attempt: int = 1, *,
             deployment_id: str | None = "dep-1", command: list[str] | None = None,
             **config: Any) -> JobSpec:
    return JobSpec(run_id=run_id, job_name=f"job-{run_id}", image=None,
                   command=command or ["python", "-c", "print('hi')"],
                   env={"PUSHPOOL_RUN_ID": run_id, "PUSHPOOL_RUN_TOKEN": "tok-secret"},
                   labels={"pushpool-run-id": run_id, "pushpool-pool": "cr-pool"},
                   config=cloud_run_config(fake, **config), attempt=attempt,
                   pool_name="cr-pool", deployment_id=deployment_id)


def _execution(conditions: list[dict[str, Any]], **counts: Any) -> dict[str, Any]:
    return {"name": "projects/p/locations/l/jobs/j/executions/j-abcde",
            "conditions": conditions, **counts}


def _completed(state: str, **extra: Any) -> dict[str, Any]:
    return {"type": "Completed", "state": state, **extra}


def mapping_cases() -> list[MappingCase]:
    failed_task = [{"index": 0, "lastAttemptResult": {
        "exitCode": 3, "status": {"message": "The container exited with an error (exit code 3)."}}}]
    never_ran = [{"index": 0, "lastAttemptResult": {"status": {"message": "Image not found"}}}]
    cases: list[tuple[str, dict[str, Any], list[dict[str, Any]], InfraPhase]] = [
        ("CONDITION_PENDING", _execution([_completed("CONDITION_PENDING")]), [],
         InfraPhase.PENDING),
        ("CONDITION_RECONCILING", _execution([_completed("CONDITION_RECONCILING")]), [],
         InfraPhase.PENDING),
        ("no conditions yet", _execution([]), [], InfraPhase.PENDING),
        ("runningCount > 0", _execution([_completed("CONDITION_PENDING")], runningCount=1), [],
         InfraPhase.RUNNING),
        ("some tasks done", _execution([_completed("CONDITION_PENDING")], succeededCount=1), [],
         InfraPhase.RUNNING),
        ("CANCELLING", _execution([_completed("CONDITION_PENDING",
                                              executionReason="CANCELLING")], runningCount=1),
         [], InfraPhase.RUNNING),
        ("ResourcesAvailable FAILED", _execution([
            _completed("CONDITION_PENDING"),
            {"type": "ResourcesAvailable", "state": "CONDITION_FAILED", "severity": "ERROR",
             "message": "Image 'x' not found."}]), [], InfraPhase.CRASHED),
        ("CONDITION_SUCCEEDED", _execution([_completed("CONDITION_SUCCEEDED")],
                                           succeededCount=1), [], InfraPhase.SUCCEEDED),
        ("FAILED NON_ZERO_EXIT_CODE, exit 3", _execution(
            [_completed("CONDITION_FAILED", executionReason="NON_ZERO_EXIT_CODE")],
            failedCount=1), failed_task, InfraPhase.FAILED),
        ("FAILED NON_ZERO_EXIT_CODE, tasks unread", _execution(
            [_completed("CONDITION_FAILED", executionReason="NON_ZERO_EXIT_CODE")],
            failedCount=1), [], InfraPhase.FAILED),
        ("FAILED CANCELLED", _execution([_completed("CONDITION_FAILED",
                                                    executionReason="CANCELLED")],
                                        cancelledCount=1), [], InfraPhase.CANCELLED),
        ("FAILED, only cancelled tasks", _execution([_completed("CONDITION_FAILED")],
                                                    cancelledCount=2), [],
         InfraPhase.CANCELLED),
        ("FAILED DELETED", _execution([_completed("CONDITION_FAILED",
                                                  executionReason="DELETED")]), [],
         InfraPhase.CRASHED),
        ("FAILED, no task ran", _execution([_completed("CONDITION_FAILED",
                                                       message="Image not found")],
                                           failedCount=1), never_ran, InfraPhase.CRASHED),
    ]
    return [MappingCase(name, execution_status(body, tasks), expected)
            for name, body, tasks, expected in cases]


class CloudRunHarness:
    name = "cloud-run-fake"
    package = "providers.cloud_run"
    sdk_modules = ("google.cloud", "google.api_core", "google.auth", "grpc")

    def __init__(self, request: pytest.FixtureRequest):
        self.fake = shared_fake()
        self.jobs: dict[tuple[str, str], Job] = {}
        self.providers: list[CloudRunProvider] = []

    async def start(self) -> None:
        self.fake.reset()

    async def stop(self) -> None:
        for provider in self.providers:
            await provider.close()

    def new_provider(self) -> Provider:
        provider = make_provider()
        self.providers.append(provider)
        return provider

    def job_spec(self, run_id: str, attempt: int, job: Job) -> JobSpec:
        self.jobs[(run_id, str(attempt))] = job
        return spec_for(self.fake, run_id, attempt)

    async def advance(self, provider: Provider, ref: InfraRef) -> None:
        api = self.fake.run
        with self.fake.server.lock:
            execution = api.executions.get(ref.infra_id)
            if execution is None or execution.get("completionTime"):
                return
            env = execution_env(execution)
            job = self.jobs.get((env.get(RUN_ENV, ""), env.get(ATTEMPT_ENV, "")), Job())
            if not execution.get("runningCount"):
                api.start(ref.infra_id)
                if job.lines:
                    self.fake.logging.write(execution, list(job.lines))
            elif job.exit_code == 0:
                api.succeed(ref.infra_id)
            elif job.exit_code is not None:
                api.fail(ref.infra_id, job.exit_code)

    def bad_config(self) -> tuple[dict[str, Any], str]:
        return cloud_run_config(self.fake, memory="512MB"), "memory"

    def mapping_cases(self) -> list[MappingCase]:
        return mapping_cases()

    def missing_ref(self) -> InfraRef:
        conn = Connection(self.fake.project, self.fake.region, self.fake.url, "anonymous")
        name = f"{conn.parent}/jobs/pushpool-never-0000/executions/pushpool-never-0000-zzzzz"
        return InfraRef(name, {**conn.facts(), "submitted_at": time.time() - 3600})

    async def count_jobs(self, run_id: str) -> int:
        return len(self.fake.run.executions_of(run_id))

    async def inject_submit_fault(self, kind: Literal["retryable", "permanent"]) -> str:
        if kind == "retryable":
            message = "The service is currently unavailable."
            self.fake.server.fail_next("jobs.run", 503, message)
        else:
            message = ("Permission 'run.jobs.run' denied on resource 'projects/"
                       f"{self.fake.project}/locations/{self.fake.region}/jobs/x' (or "
                       "resource may not exist).")
            self.fake.server.fail_next("jobs.run", 403, message)
        return message
