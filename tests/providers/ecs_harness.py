"""ECS in the conformance suite: the adapter against moto behind the ECS proxy
(``tests/fakes/ecs_proxy.py``), which gives chosen tasks their exit codes and faults."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import pytest

from providers.base import InfraPhase, InfraRef, JobSpec, Provider
from providers.ecs.adapter import EcsProvider, connection_of
from providers.ecs.events import make_infra_id, task_status
from tests.fakes.ecs_testing import CLUSTER, REGION, Aws, fast_settings
from tests.fakes.moto_ecs import ACCOUNT, MotoEcs
from tests.providers.harness import Job, MappingCase

LOG_GROUP = "/pushpool/ecs"  # the default template's awslogs group


class EcsMotoHarness:
    name = "ecs-moto"
    package = "providers.ecs"
    sdk_modules = ("boto3", "botocore")

    def __init__(self, request: pytest.FixtureRequest):
        self.aws: Aws = request.getfixturevalue("ecs_aws")
        self.server: MotoEcs = self.aws.server
        self.jobs: dict[str, Job] = {}  # run id -> what its tasks should do
        self.advanced: set[str] = set()
        self.made: list[EcsProvider] = []

    async def start(self) -> None:
        self.aws.client("logs").create_log_group(logGroupName=LOG_GROUP)

    async def stop(self) -> None:
        self.server.clear_faults()
        for provider in self.made:
            await provider.close()

    def new_provider(self) -> Provider:
        provider = EcsProvider(fast_settings())
        self.made.append(provider)
        return provider

    def job_spec(self, run_id: str, attempt: int, job: Job) -> JobSpec:
        self.jobs[run_id] = job
        return self.aws.spec(run_id, attempt=attempt)

    async def advance(self, provider: Provider, ref: InfraRef) -> None:
        """Once per task: write its log lines where awslogs would, then stop it with its
        exit code (moto leaves every task RUNNING)."""
        if ref.infra_id in self.advanced:
            return
        _, _, _, arn = connection_of(ref)
        described = self.aws.client("ecs").describe_tasks(cluster=CLUSTER, tasks=[arn],
                                                          include=["TAGS"])["tasks"]
        tags = {t["key"]: t["value"] for t in (described[0].get("tags") or [])}
        job = self.jobs.get(tags.get("pushpool:run-id", ""))
        if job is None or (job.exit_code is None and not job.lines):
            return
        self.advanced.add(ref.infra_id)
        if job.lines:
            logs = self.aws.client("logs")
            stream = f"pushpool/pushpool/{arn.rsplit('/', 1)[-1]}"
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
            base = int(time.time() * 1000)
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[
                {"timestamp": base + i, "message": line} for i, line in enumerate(job.lines)])
        if job.exit_code is None:  # the container runs (awslogs writes only then)
            self.server.set_outcome(arn, lastStatus="RUNNING",
                                    containers=[{"lastStatus": "RUNNING"}])
        else:
            self.server.set_outcome(arn, lastStatus="STOPPED",
                                    stopCode="EssentialContainerExited",
                                    stoppedReason="Essential container in task exited",
                                    containers=[{"exitCode": job.exit_code}])

    def bad_config(self) -> tuple[dict[str, Any], str]:
        return self.aws.config(launch_type="EC2"), "launch_type"

    def mapping_cases(self) -> list[MappingCase]:
        stopped = {"lastStatus": "STOPPED", "stopCode": "EssentialContainerExited",
                   "stoppedReason": "Essential container in task exited"}
        tasks: list[tuple[str, dict[str, Any], InfraPhase]] = [
            ("PROVISIONING", {"lastStatus": "PROVISIONING"}, InfraPhase.PENDING),
            ("PENDING", {"lastStatus": "PENDING"}, InfraPhase.PENDING),
            ("RUNNING", {"lastStatus": "RUNNING"}, InfraPhase.RUNNING),
            ("STOPPED exit 0", {**stopped, "containers": [{"exitCode": 0}]},
             InfraPhase.SUCCEEDED),
            ("STOPPED exit 2", {**stopped, "containers": [{"exitCode": 2}]},
             InfraPhase.FAILED),
            ("STOPPED UserInitiated", {"lastStatus": "STOPPED", "stopCode": "UserInitiated",
                                       "containers": [{"exitCode": 143}]},
             InfraPhase.CANCELLED),
            ("STOPPED TaskFailedToStart", {"lastStatus": "STOPPED",
                                           "stopCode": "TaskFailedToStart",
                                           "stoppedReason": "CannotPullContainerError: x"},
             InfraPhase.CRASHED),
            ("STOPPED SpotInterruption", {"lastStatus": "STOPPED",
                                          "stopCode": "SpotInterruption",
                                          "containers": [{"exitCode": None}]},
             InfraPhase.CRASHED),
        ]
        return [MappingCase(native, task_status({"containers": [], **task}), phase)
                for native, task, phase in tasks]

    def missing_ref(self) -> InfraRef:
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{uuid.uuid4().hex}"
        return InfraRef(make_infra_id(REGION, CLUSTER, arn),
                        {"region": REGION, "endpoint_url": self.server.url})

    async def count_jobs(self, run_id: str) -> int:
        return len({arn for call in self.server.run_tasks()
                    if run_id in str(call.get("started_by")) for arn in call["task_arns"]})

    async def inject_submit_fault(self, kind: Literal["retryable", "permanent"]) -> str:
        if kind == "retryable":
            self.server.add_fault("RunTask", "503")
            return "Service unavailable"
        self.server.add_fault("RunTask", "error", status=400, code="ClientException",
                              message="No Container Instances were found in your cluster")
        return "No Container Instances were found"
