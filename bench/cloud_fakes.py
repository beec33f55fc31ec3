"""The cloud adapters' fakes as the benchmarks use them, one ``FakeCloud`` per pool type:
Cloud Run, ACI and Modal, each with its fake from ``tests/fakes`` started in this process,
the job variables that reach it, the adapter's own rate limits raised by configuration,
and when each run's create request (run_job, the container group PUT, the sandbox create)
reached the fake.

The raised limits are ``PUSHPOOL_<ADAPTER>_*`` settings, given to the adapter built here
and to a server process alike. Their defaults protect real quotas (Cloud Run: about one
run_job a second; ACI: 100 container group creates per 5 minutes, ARM reads at 20 a
second); at 100 runs/s those would be what is measured. Modal has no bucket of its own.

bench/providers.py drives each adapter directly; bench/cloud_dispatch.py runs a real
server against the fake and measures a run due -> its create request arriving. Imports of
the fakes and the SDKs happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from providers.base import JobSpec, Provider

Arrival = tuple[str, float]  # (run id, wall-clock time its create request arrived)


@dataclass(frozen=True)
class FakeCloud:
    pool_type: str
    emulator: str  # what answers, for the tables
    start: Callable[[], Any]  # the shared fake, reset and ready for a benchmark
    job_variables: Callable[[Any], dict[str, Any]]  # a deployment's, reaching the fake
    make_provider: Callable[[dict[str, str]], Provider]  # the adapter with these settings
    create_arrivals: Callable[[Any], list[Arrival]]  # every create request, in order
    limits: dict[str, str] = field(default_factory=dict)  # the raised rate limits
    # What a server process needs to trust the fake (environment) and the job variables
    # it then takes, when they differ from the in-process ones; None: they do not.
    for_server: Callable[[Any], tuple[dict[str, str], dict[str, Any]]] | None = None

    def server_setup(self, fake: Any) -> tuple[dict[str, str], dict[str, Any]]:
        """The server process's environment (the raised limits included) and the
        deployment's job variables."""
        if self.for_server is None:
            return dict(self.limits), self.job_variables(fake)
        env, variables = self.for_server(fake)
        return {**self.limits, **env}, variables

    def describe_limits(self) -> str:
        if not self.limits:
            return f"{self.pool_type}: no rate limit of its own to raise"
        shown = ", ".join(f"{k}={v}" for k, v in self.limits.items())
        return f"{self.pool_type}: its own rate limits raised for this run: {shown}"


def job_spec(cloud: FakeCloud, fake: Any, run_id: str) -> JobSpec:
    """What the dispatcher would hand the adapter for one run of a benchmark deployment
    (the job variables are the rendered job configuration: every one is a whole-value
    placeholder in these templates)."""
    return JobSpec(run_id=run_id, job_name=f"bench-{run_id}", image=None,
                   command=["python", "-c", "print('hi')"],
                   env={"PUSHPOOL_RUN_ID": run_id, "PUSHPOOL_RUN_TOKEN": "tok-bench"},
                   labels={"pushpool-run-id": run_id, "pushpool-pool": "bench"},
                   config=cloud.job_variables(fake), pool_name="bench",
                   deployment_id="bench")


# ---------------------------------------------------------------------------- Cloud Run


def _cloud_run_start() -> Any:
    from tests.fakes.cloud_run import shared_fake

    fake = shared_fake()
    fake.reset()
    fake.run.auto_start = True  # executions run as soon as they are made
    return fake


def _cloud_run_variables(fake: Any) -> dict[str, Any]:
    from tests.providers.cloud_run_harness import cloud_run_config

    return cloud_run_config(fake)


def _cloud_run_provider(limits: dict[str, str]) -> Provider:
    from providers.cloud_run import CloudRunProvider, CloudRunSettings

    return CloudRunProvider(settings=CloudRunSettings.from_env(limits))


def _cloud_run_arrivals(fake: Any) -> list[Arrival]:
    from providers.cloud_run.jobs import RUN_ENV

    with fake.server.lock:
        requests = list(zip(fake.server.requests, fake.server.request_times, strict=True))
    out = []
    for (operation, _, body), when in requests:
        if operation != "jobs.run":
            continue
        for container in (body.get("overrides") or {}).get("containerOverrides") or []:
            env = {e.get("name"): e.get("value") for e in container.get("env") or []}
            if env.get(RUN_ENV):
                out.append((str(env[RUN_ENV]), when))
    return out


# ---------------------------------------------------------------------------- ACI


def _aci_start() -> Any:
    from tests.fakes.azure import shared_fake
    from tests.providers.aci_harness import RESOURCE_GROUP

    fake = shared_fake()
    fake.reset()
    fake.resources.add_resource_group(fake.subscription, RESOURCE_GROUP)
    fake.aci.auto_start = 0.0  # groups start as soon as they are made
    return fake


def _aci_variables(fake: Any) -> dict[str, Any]:
    from tests.providers.aci_harness import aci_config

    return aci_config(fake)


def _aci_for_server(fake: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """The fake's CA as the server's trust store, not the pool's ``ca_bundle``: given a CA
    file, azure-core's aiohttp transport builds an SSL context per request, so every
    request would pay a new TLS connection, which a pool on real Azure never does."""
    variables = _aci_variables(fake)
    variables.pop("ca_bundle", None)
    return {"SSL_CERT_FILE": fake.ca_file}, variables


def _aci_provider(limits: dict[str, str]) -> Provider:
    from providers.aci import AciProvider, AciSettings

    return AciProvider(settings=AciSettings.from_env(limits))


def _aci_arrivals(fake: Any) -> list[Arrival]:
    from providers.aci.body import RUN_TAG

    server = fake.server
    with server.lock:
        requests = list(zip(server.requests, server.request_times, strict=True))
        run_of = {name: (group.get("tags") or {}).get(RUN_TAG)
                  for (_, _, name), group in fake.aci.groups.items()}
    out = []
    for (kind, method, path), when in requests:
        if kind == "containerGroups.create" and method == "PUT":
            run_id = run_of.get(path.rstrip("/").rsplit("/", 1)[-1])
            if run_id:
                out.append((str(run_id), when))
    return out


# ---------------------------------------------------------------------------- Modal


def _modal_start() -> Any:
    from tests.fakes.modal import shared_fake
    from tests.providers.modal_harness import TOKEN_ID, TOKEN_SECRET

    fake = shared_fake()
    fake.reset()
    fake.require_tokens({TOKEN_ID: TOKEN_SECRET})
    return fake


def _modal_variables(fake: Any) -> dict[str, Any]:
    from tests.providers.modal_harness import modal_config

    return modal_config(fake)


def _modal_provider(limits: dict[str, str]) -> Provider:
    from providers.modal import ModalProvider, ModalSettings

    return ModalProvider(settings=ModalSettings.from_env(limits))


def _modal_arrivals(fake: Any) -> list[Arrival]:
    from providers.modal.sandbox import RUN_TAG

    out = []
    for call in list(fake.calls):
        if call.name in ("SandboxCreateV2", "SandboxCreate"):
            tags = {t.tag_name: t.tag_value for t in call.request.tags}
            if tags.get(RUN_TAG):
                out.append((str(tags[RUN_TAG]), call.received))
    return out


CLOUDS: dict[str, FakeCloud] = {cloud.pool_type: cloud for cloud in (
    FakeCloud("cloud-run:push", "tests/fakes/cloud_run (HTTP, stdlib threads)",
              _cloud_run_start, _cloud_run_variables, _cloud_run_provider,
              _cloud_run_arrivals,
              {"PUSHPOOL_CLOUD_RUN_RUN_JOB_RATE": "1000",
               "PUSHPOOL_CLOUD_RUN_RUN_JOB_BURST": "1000"}),
    FakeCloud("azure-container-instance:push", "tests/fakes/azure (HTTPS, stdlib threads)",
              _aci_start, _aci_variables, _aci_provider, _aci_arrivals,
              {"PUSHPOOL_ACI_CREATES_PER_5MIN": "1000000",
               "PUSHPOOL_ACI_CREATES_PER_HOUR": "1000000",
               "PUSHPOOL_ACI_READ_RATE": "1000", "PUSHPOOL_ACI_READ_BURST": "1000"},
              _aci_for_server),
    FakeCloud("modal:push", "tests/fakes/modal (grpclib, its own loop thread)",
              _modal_start, _modal_variables, _modal_provider, _modal_arrivals),
)}
