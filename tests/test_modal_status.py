"""modal:push status: every native state through the real client, many runs at once
without a poll each, missing sandboxes, transient failures left out."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpclib import Status
from modal_proto import api_pb2

import providers.modal
from providers.base import InfraPhase, InfraRef, RetryableProviderError
from providers.modal import ModalProvider, status
from providers.modal.status import EXPECTED_PHASES, NATIVE_STATES
from tests.fakes.modal import FakeModal
from tests.providers.modal_harness import make_provider, modal_fake, modal_provider, spec_for

__all__ = ["modal_fake", "modal_provider"]  # fixtures


def test_status_numbers_are_modals() -> None:
    for name, number in NATIVE_STATES.items():
        if number is not None:
            assert api_pb2.GenericResult.GenericStatus.Value(f"GENERIC_STATUS_{name}") == number
    assert set(NATIVE_STATES) == set(EXPECTED_PHASES)
    known = {n for n in api_pb2.GenericResult.GenericStatus.keys()}
    documented = {f"GENERIC_STATUS_{n}" for n in NATIVE_STATES if n != "RUNNING"}
    assert known - {"GENERIC_STATUS_UNSPECIFIED"} == documented, \
        "Modal has a GenericResult status this adapter does not document"


def test_an_unknown_status_is_crashed_saying_so() -> None:
    got = status.result_status(api_pb2.GenericResult(status=99))  # type: ignore[arg-type]
    assert got.phase is InfraPhase.CRASHED and got.reason and "99" in got.reason
    assert status.result_status(api_pb2.GenericResult()).phase is InfraPhase.RUNNING


# The exit code Modal's result carries for each native state, as far as the public
# ``returncode`` shows it (the client makes TIMEOUT 124 and TERMINATED 137 itself).
EXIT_CODES = {"FAILURE": 3, "KERNEL_OOM_KILL": 137, "MEMORY_MANAGER_EVICTION": 137,
              "MEMORY_THRASHING_EVICTION": 137}
# Native states the public API shows only as an exit code (see providers.modal.status).
READ_BY_EXIT_CODE = {"IDLE_TIMEOUT", "INIT_FAILURE", "INTERNAL_FAILURE", "KERNEL_OOM_KILL",
                     "MEMORY_MANAGER_EVICTION", "MEMORY_THRASHING_EVICTION"}


@pytest.mark.parametrize("native", [n for n in NATIVE_STATES if n != "RUNNING"])
async def test_every_native_state_through_the_client(native: str, modal_fake: FakeModal,
                                                      modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, f"run-{native.lower()}"))
    assert (await modal_provider.status(ref)).phase is InfraPhase.RUNNING
    number = NATIVE_STATES[native]
    assert number is not None
    exit_code = EXIT_CODES.get(native, 0)
    modal_fake.set_result(ref.infra_id, number, exit_code, exception=f"modal says {native}")
    got = await make_provider().status(InfraRef.from_json(ref.to_json()))
    shown = {"TIMEOUT": 124, "TERMINATED": 137}.get(native, exit_code)
    assert got == status.returncode_status(shown)
    if native not in READ_BY_EXIT_CODE:
        assert got.phase is EXPECTED_PHASES[native]
    assert got.exit_code == shown


def test_the_public_return_codes_map_onto_phases() -> None:
    cases = {None: InfraPhase.RUNNING, 0: InfraPhase.SUCCEEDED, 3: InfraPhase.FAILED,
             124: InfraPhase.FAILED, 137: InfraPhase.CANCELLED}
    for code, phase in cases.items():
        got = status.returncode_status(code)
        assert got.phase is phase and got.exit_code == code
    assert "timeout" in str(status.returncode_status(124).reason)
    assert "out of memory" in str(status.returncode_status(137).reason)


def test_the_adapter_uses_no_modal_internals() -> None:
    package = Path(providers.modal.__file__).parent
    for source in package.glob("*.py"):
        code = [line.split("#")[0] for line in source.read_text(encoding="utf-8").splitlines()]
        text = "\n".join(code)
        for private in ("modal._utils", "synchronizer", "._impl", "_translate_in", ".stub",
                        "._stub"):
            assert private not in text, f"{source.name} reaches into modal's {private}"


async def test_status_polls_hold_no_long_poll_per_run(modal_fake: FakeModal) -> None:
    provider = make_provider(list_threshold=3)
    refs = [await provider.submit(spec_for(modal_fake, f"run-lp-{i}")) for i in range(6)]
    modal_fake.finish(refs[0].infra_id, 0)
    for _ in range(3):  # a few watcher passes
        await provider.status_many(refs)
    assert modal_fake.long_polls == 0 and modal_fake.peak_held_polls == 0
    await provider.close()


async def test_a_missing_sandbox_is_missing(modal_fake: FakeModal,
                                            modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-gone"))
    gone = InfraRef("sb-v2-424242", ref.connection)
    got = await modal_provider.status(gone)
    assert got.phase is InfraPhase.MISSING and got.reason and "sb-v2-424242" in got.reason


async def test_many_runs_cost_one_listing_and_a_poll_for_each_ended_one(
        modal_fake: FakeModal) -> None:
    modal_fake.list_page_size = 4  # so the listing pages
    provider = make_provider(list_threshold=3)
    refs = [await provider.submit(spec_for(modal_fake, f"run-many-{i}")) for i in range(10)]
    for ref in refs[:2]:
        modal_fake.finish(ref.infra_id, 1)
    modal_fake.calls.clear()
    fresh = make_provider(list_threshold=3)
    got = await fresh.status_many([InfraRef.from_json(r.to_json()) for r in refs])
    assert {r.infra_id for r in refs} == set(got)
    assert [got[r.infra_id].phase for r in refs] == [InfraPhase.FAILED] * 2 + \
        [InfraPhase.RUNNING] * 8
    # 8 running: two pages of four, then the empty page that ends the listing.
    assert modal_fake.count("SandboxListV2") == 3
    assert modal_fake.count("SandboxWaitV2") == 2  # only the two that were not listed
    assert all(w.timeout == 0 for w in modal_fake.calls_of("SandboxWaitV2"))
    await provider.close()
    await fresh.close()


async def test_few_runs_are_polled_without_a_listing(modal_fake: FakeModal,
                                                     modal_provider: ModalProvider) -> None:
    refs = [await modal_provider.submit(spec_for(modal_fake, f"run-few-{i}")) for i in range(2)]
    modal_fake.calls.clear()
    got = await modal_provider.status_many(refs)
    assert all(s.phase is InfraPhase.RUNNING for s in got.values())
    assert modal_fake.count("SandboxListV2") == 0 and modal_fake.count("SandboxWaitV2") == 2


async def test_a_transient_failure_leaves_the_run_out(modal_fake: FakeModal,
                                                      modal_provider: ModalProvider) -> None:
    refs = [await modal_provider.submit(spec_for(modal_fake, f"run-t-{i}")) for i in range(2)]
    modal_fake.fail_next("SandboxWaitV2", Status.RESOURCE_EXHAUSTED, "slow down (fake)")
    got = await modal_provider.status_many(refs)
    assert len(got) == 1 and all(s.phase is InfraPhase.RUNNING for s in got.values())
    modal_fake.fail_next("SandboxWaitV2", Status.RESOURCE_EXHAUSTED, "slow down (fake)", 2)
    with pytest.raises(RetryableProviderError, match="slow down"):
        await modal_provider.status_many(refs)
