"""The ACI adapter in the conformance suite: the real azure-mgmt-containerinstance and
azure-identity clients against the fake ARM in ``tests.fakes.azure`` (HTTPS with a test
CA, a service principal signing in at the fake's token endpoint).

Also the helpers the ``tests/test_aci_*.py`` files share: ``aci_config`` (a valid
rendered job configuration reaching the fake), ``fast_settings`` and ``make_provider``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import pytest

from providers.aci import AciProvider, AciSettings
from providers.aci.arm import connection_from_config
from providers.aci.body import RUN_TAG, group_name
from providers.aci.config import parse_config
from providers.aci.status import group_status
from providers.base import InfraPhase, InfraRef, JobSpec, Provider
from tests.fakes.azure import FakeAzure, shared_fake
from tests.providers.harness import Job, MappingCase

RESOURCE_GROUP = "pushpool-tests"
AUDIENCE_SCOPE = "https://management.azure.com/.default"


def aci_config(fake: FakeAzure, **overrides: Any) -> dict[str, Any]:
    """A rendered job configuration that reaches ``fake`` as a service principal."""
    config: dict[str, Any] = {
        "subscription_id": fake.subscription, "resource_group_name": RESOURCE_GROUP,
        "location": "eastus", "resource_manager_endpoint": fake.base_url,
        "token_scope": AUDIENCE_SCOPE, "ca_bundle": fake.ca_file,
        "credentials": {"kind": "service_principal", "tenant_id": fake.tenant,
                        "client_id": fake.client_id, "client_secret": fake.client_secret,
                        "authority_host": fake.base_url},
        "image": "mcr.microsoft.com/azuredocs/aci-helloworld:latest"}
    config.update(overrides)
    return config


def fast_settings(**overrides: Any) -> AciSettings:
    values: dict[str, Any] = {"lro_polling_interval": 0.02, "backoff_base": 0.01,
                              "backoff_cap": 0.05, "missing_grace_seconds": 0.0}
    values.update(overrides)
    return AciSettings(**values)


def make_provider(**overrides: Any) -> AciProvider:
    return AciProvider(settings=fast_settings(**overrides))


def spec_for(fake: FakeAzure, run_id: str, attempt: int = 1, **config: Any) -> JobSpec:
    return JobSpec(run_id=run_id, job_name=f"job-{run_id}", image=None,
                   command=["python", "-c", "print('hi')"],
                   env={"PUSHPOOL_RUN_ID": run_id, "PUSHPOOL_RUN_TOKEN": "tok-secret"},
                   config=aci_config(fake, **config), attempt=attempt, pool_name="aci-pool",
                   deployment_id="dep-1")


def native(provisioning: str, group: str | None = None,
           container: dict[str, Any] | None = None,
           events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A container group as ARM returns it, in the given native state."""
    view: dict[str, Any] = {"currentState": container or {}, "events": events or []}
    return {"name": "g", "properties": {
        "provisioningState": provisioning,
        "instanceView": {"state": group, "events": []} if group else {"events": []},
        "containers": [{"name": "pushpool", "properties": {"instanceView": view}}]}}


def mapping_cases() -> list[MappingCase]:
    pull = [{"type": "Warning", "name": "Failed",
             "message": 'Failed to pull image "nope": not found'}]
    cases: list[tuple[str, dict[str, Any], InfraPhase, dict[str, Any]]] = [
        ("Pending", native("Pending", "Pending", {"state": "Waiting"}), InfraPhase.PENDING, {}),
        ("Creating", native("Creating", None, {"state": "Waiting"}), InfraPhase.PENDING, {}),
        ("Waiting past start_timeout", native("Creating", None, {"state": "Waiting"}),
         InfraPhase.CRASHED, {"pending_for": 11, "start_timeout": 10}),
        ("ErrImagePull", native("Creating", None, {"state": "Waiting",
                                                   "detailStatus": "ErrImagePull"}, pull),
         InfraPhase.CRASHED, {}),
        ("Failed", native("Failed", "Failed", {}), InfraPhase.CRASHED, {}),
        ("Canceled", native("Canceled"), InfraPhase.CRASHED, {}),
        ("Running", native("Succeeded", "Running", {"state": "Running"}),
         InfraPhase.RUNNING, {}),
        ("Stopped", native("Succeeded", "Stopped", {"state": "Terminated", "exitCode": 137}),
         InfraPhase.CANCELLED, {}),
        ("Deleting", native("Deleting", "Running", {"state": "Running"}),
         InfraPhase.CANCELLED, {}),
        ("Terminated exit 0", native("Succeeded", "Succeeded",
                                     {"state": "Terminated", "exitCode": 0}),
         InfraPhase.SUCCEEDED, {}),
        ("Terminated exit 3", native("Succeeded", "Failed",
                                     {"state": "Terminated", "exitCode": 3}),
         InfraPhase.FAILED, {}),
        ("Terminated, no exit code", native("Succeeded", "Failed", {"state": "Terminated"}),
         InfraPhase.CRASHED, {}),
        ("instanceView Succeeded", native("Succeeded", "Succeeded"), InfraPhase.SUCCEEDED, {}),
        ("instanceView Failed", native("Succeeded", "Failed"), InfraPhase.FAILED, {}),
    ]
    return [MappingCase(name, group_status(body, **kw), expected)
            for name, body, expected, kw in cases]


class AciHarness:
    name = "aci-fake-arm"
    package = "providers.aci"
    sdk_modules = ("azure",)

    def __init__(self, request: pytest.FixtureRequest):
        self.fake = shared_fake()
        self.jobs: dict[str, Job] = {}
        self.providers: list[AciProvider] = []

    async def start(self) -> None:
        self.fake.reset()
        self.fake.resources.add_resource_group(self.fake.subscription, RESOURCE_GROUP)

    async def stop(self) -> None:
        for provider in self.providers:
            await provider.close()

    def new_provider(self) -> Provider:
        provider = make_provider()
        self.providers.append(provider)
        return provider

    def job_spec(self, run_id: str, attempt: int, job: Job) -> JobSpec:
        self.jobs[group_name(run_id, attempt)] = job
        return spec_for(self.fake, run_id, attempt)

    async def advance(self, provider: Provider, ref: InfraRef) -> None:
        name = str(ref.connection["group"])
        aci = self.fake.aci
        try:
            group = aci.group(RESOURCE_GROUP, name)
        except KeyError:
            return
        job = self.jobs.get(name, Job())
        props = group["properties"]
        if props["provisioningState"] == "Pending":
            aci.start(RESOURCE_GROUP, name)
            if job.lines:
                aci.write_logs(RESOURCE_GROUP, name, list(job.lines))
        elif props["instanceView"]["state"] == "Running" and job.exit_code is not None:
            aci.finish(RESOURCE_GROUP, name, job.exit_code)

    def bad_config(self) -> tuple[dict[str, Any], str]:
        return aci_config(self.fake, memory=1.55), "memory"

    def mapping_cases(self) -> list[MappingCase]:
        return mapping_cases()

    def missing_ref(self) -> InfraRef:
        cfg = parse_config(aci_config(self.fake))
        # The facts submit records, for a group that was never made.
        ref = AciProvider._ref(make_provider(), connection_from_config(cfg),
                               "pp-never-made-a1-00000000", cfg)
        facts = {**ref.connection, "submitted_at": time.time() - 3600}
        return InfraRef(ref.infra_id, facts, ref.console_url)

    async def count_jobs(self, run_id: str) -> int:
        with self.fake.server.lock:
            return sum(1 for g in self.fake.aci.groups.values()
                       if (g.get("tags") or {}).get(RUN_TAG) == run_id)

    async def inject_submit_fault(self, kind: Literal["retryable", "permanent"]) -> str:
        if kind == "retryable":
            message = "The service is temporarily unavailable (fake 503)."
            self.fake.server.fail_next("containerGroups.create", 503, "ServiceUnavailable",
                                       message)
        else:
            message = ("The client 'pushpool' with object id 'x' does not have authorization "
                       "to perform action 'Microsoft.ContainerInstance/containerGroups/write'.")
            self.fake.server.fail_next("containerGroups.create", 403, "AuthorizationFailed",
                                       message)
        return message
