"""The Modal adapter in the conformance suite: the real ``modal`` client, over its own gRPC
protocol, against the fake Modal server in ``tests.fakes.modal`` on 127.0.0.1, reached
through the pool's ``server_url`` and an explicit client with the pool's token.

Also the helpers the ``tests/test_modal_*.py`` files share: ``modal_config`` (a valid
rendered job configuration reaching the fake), ``spec_for`` and ``make_provider``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import pytest
from grpclib import Status
from modal_proto import api_pb2

from providers.base import InfraRef, JobSpec, Provider
from providers.modal import ModalProvider, ModalSettings
from providers.modal.connection import Connection
from providers.modal.sandbox import ATTEMPT_TAG, RUN_TAG
from providers.modal.status import EXPECTED_PHASES, NATIVE_STATES, result_status
from tests.fakes.modal import FakeModal, shared_fake
from tests.providers.harness import Job, MappingCase

TOKEN_ID, TOKEN_SECRET = "ak-pushpool-tests", "as-very-secret-token"
POOL = "modal-pool"
APP = "pushpool-modal-pool"


def modal_config(fake: FakeModal, **overrides: Any) -> dict[str, Any]:
    """A rendered job configuration that reaches ``fake`` with the tests' token."""
    config: dict[str, Any] = {
        "server_url": fake.url,
        "credentials": {"token_id": TOKEN_ID, "token_secret": TOKEN_SECRET},
        "image": "python:3.12-slim", "timeout": 600}
    config.update(overrides)
    return config


def fast_settings(**overrides: Any) -> ModalSettings:
    values: dict[str, Any] = {"log_first_wait": 0.3, "log_idle": 0.05, "log_budget": 1.0}
    values.update(overrides)
    return ModalSettings(**values)


def make_provider(**overrides: Any) -> ModalProvider:
    return ModalProvider(settings=fast_settings(**overrides))


def spec_for(fake: FakeModal, run_id: str, attempt: int = 1, **config: Any) -> JobSpec:
    return JobSpec(run_id=run_id, job_name=f"job-{run_id}", image=None,
                   command=["python", "-c", "print('hi')"],
                   env={"PUSHPOOL_RUN_ID": run_id, "PUSHPOOL_RUN_TOKEN": "tok-secret"},
                   labels={"pushpool-run-id": run_id, "team": "data"},
                   config=modal_config(fake, **config), attempt=attempt, pool_name=POOL,
                   deployment_id="dep-1")


def mapping_cases() -> list[MappingCase]:
    cases = []
    for native, status in NATIVE_STATES.items():
        # Built from Modal's own message, so a renumbered status shows here.
        result = None if status is None else api_pb2.GenericResult(
            status=status, exitcode=3 if native == "FAILURE" else 0)  # type: ignore[arg-type]
        cases.append(MappingCase(native, result_status(result), EXPECTED_PHASES[native]))
    return cases


class ModalHarness:
    name = "modal-fake"
    package = "providers.modal"
    sdk_modules = ("modal", "modal_proto", "grpclib", "synchronicity")

    def __init__(self, request: pytest.FixtureRequest):
        self.fake = shared_fake()
        self.jobs: dict[tuple[str, str], Job] = {}
        self.started: set[str] = set()
        self.providers: list[ModalProvider] = []

    async def start(self) -> None:
        self.fake.reset()
        self.fake.require_tokens({TOKEN_ID: TOKEN_SECRET})

    async def stop(self) -> None:
        for provider in self.providers:
            await provider.close()
        # Loud: a call the fake does not answer, or a crash inside it, fails the test.
        assert not self.fake.unimplemented, f"unimplemented RPCs: {self.fake.unimplemented}"
        assert not self.fake.errors, f"fake Modal server errors: {self.fake.errors}"

    def new_provider(self) -> Provider:
        provider = make_provider()
        self.providers.append(provider)
        return provider

    def job_spec(self, run_id: str, attempt: int, job: Job) -> JobSpec:
        self.jobs[(run_id, str(attempt))] = job
        return spec_for(self.fake, run_id, attempt)

    async def advance(self, provider: Provider, ref: InfraRef) -> None:
        """First call: the sandbox prints the job's lines; the next: it exits as told."""
        sandbox = self.fake.sandboxes.get(ref.infra_id)
        if sandbox is None or not sandbox.running:
            return
        job = self.jobs.get((sandbox.tags.get(RUN_TAG, ""), sandbox.tags.get(ATTEMPT_TAG, "")),
                            Job())
        if ref.infra_id not in self.started:
            self.started.add(ref.infra_id)
            if job.lines:
                self.fake.write(ref.infra_id, stdout="".join(f"{line}\n" for line in job.lines))
        elif job.exit_code is not None:
            self.fake.finish(ref.infra_id, job.exit_code)

    def bad_config(self) -> tuple[dict[str, Any], str]:
        return modal_config(self.fake, timeout=90000), "timeout"

    def mapping_cases(self) -> list[MappingCase]:
        return mapping_cases()

    def missing_ref(self) -> InfraRef:
        conn = Connection(self.fake.url, APP, "", "template", TOKEN_ID, TOKEN_SECRET)
        return InfraRef("sb-v2-never-made", {**conn.facts(), "app_id": "ap-none",
                                             "pool": POOL})

    async def count_jobs(self, run_id: str) -> int:
        return len(self.fake.sandboxes_tagged(**{RUN_TAG: run_id}))

    async def inject_submit_fault(self, kind: Literal["retryable", "permanent"]) -> str:
        if kind == "retryable":
            message = "Workspace is at its limit of concurrent sandboxes (fake)."
            self.fake.fail_next("SandboxCreateV2", Status.RESOURCE_EXHAUSTED, message)
        else:
            message = "Image 'python:3.12-slim' could not be pulled: access denied (fake)."
            self.fake.fail_next("SandboxCreateV2", Status.INVALID_ARGUMENT, message)
        return message


@pytest.fixture
def modal_fake() -> Iterator[FakeModal]:
    """The shared fake, clean, requiring the tests' token; fails the test on any RPC it
    does not implement or any crash inside it."""
    fake = shared_fake()
    fake.reset()
    fake.require_tokens({TOKEN_ID: TOKEN_SECRET})
    yield fake
    assert not fake.unimplemented, f"unimplemented RPCs: {fake.unimplemented}"
    assert not fake.errors, f"fake Modal server errors: {fake.errors}"


@pytest.fixture
async def modal_provider() -> AsyncIterator[ModalProvider]:
    provider = make_provider()
    yield provider
    await provider.close()
