"""What an adapter brings to the provider conformance suite: one harness per (adapter,
emulator) pair.

``tests/providers/test_conformance.py`` runs every test against every harness listed in
``tests/providers/conftest.py``. A new adapter joins by writing one class that satisfies
``ProviderHarness`` (usually in ``tests/providers/<name>_harness.py``) and adding one
entry to ``HARNESSES`` there. The harness reaches its emulator through the adapter's own
configuration (an endpoint, a server URL); it never patches the cloud SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from providers.base import InfraPhase, InfraRef, InfraStatus, JobSpec, Provider


@dataclass(frozen=True)
class Job:
    """What a conformance test wants a job to do once it runs."""

    exit_code: int | None = 0  # None: keeps running until cancelled
    lines: list[str] = field(default_factory=list)  # printed to stdout, in order, first


@dataclass(frozen=True)
class MappingCase:
    """One native state, what the adapter's documented mapping made of it, and the
    phase the adapter's documentation says it maps to."""

    native: str
    status: InfraStatus
    expected: InfraPhase


class ProviderHarness(Protocol):
    """Built as ``Harness(request)`` with the test's ``pytest.FixtureRequest``, so it can
    take session fixtures (an emulator started once) with ``request.getfixturevalue``."""

    name: str  # the test id, e.g. "process" or "ecs-moto"
    package: str  # the adapter's package, e.g. "providers.ecs"
    sdk_modules: tuple[str, ...]  # importing ``package`` must not import these

    async def start(self) -> None:
        """Bring the emulator to a clean state (called before each test)."""

    async def stop(self) -> None:
        """Release what ``start`` took (called after each test)."""

    def new_provider(self) -> Provider:
        """A fresh adapter instance, configured to reach the emulator."""

    def job_spec(self, run_id: str, attempt: int, job: Job) -> JobSpec:
        """A valid rendered job for the run; the emulator makes it behave as ``job``
        says (the process provider by the command it runs, a fake by being told)."""

    async def advance(self, provider: Provider, ref: InfraRef) -> None:
        """Move the emulator on while a test waits for a job (nothing, for a real
        process; a fake may start or finish the job as scripted)."""

    def bad_config(self) -> tuple[dict[str, Any], str]:
        """A job configuration ``validate_config`` must refuse, and the field name its
        message must contain."""

    def mapping_cases(self) -> list[MappingCase]:
        """Every native state the adapter documents, through its mapping function."""

    def missing_ref(self) -> InfraRef:
        """A well-formed reference to a job the emulator has never heard of."""

    async def count_jobs(self, run_id: str) -> int:
        """How many jobs (tasks, executions, container groups, sandboxes, processes) the
        emulator holds for ``run_id``."""

    async def inject_submit_fault(self, kind: Literal["retryable", "permanent"]) -> str:
        """Make the emulator fail the next submit that way; return a text the adapter's
        error message must contain (the provider's own message)."""
