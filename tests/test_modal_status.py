"""modal:push status: every native state through the real client, many runs at once
without a poll each, missing sandboxes, transient failures left out."""

from __future__ import annotations

import pytest
from grpclib import Status
from modal_proto import api_pb2

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


@pytest.mark.parametrize("native", [n for n in NATIVE_STATES if n != "RUNNING"])
async def test_every_native_state_through_the_client(native: str, modal_fake: FakeModal,
                                                      modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, f"run-{native.lower()}"))
    assert (await modal_provider.status(ref)).phase is InfraPhase.RUNNING
    number = NATIVE_STATES[native]
    assert number is not None
    exit_code = 3 if native == "FAILURE" else 0
    modal_fake.set_result(ref.infra_id, number, exit_code, exception=f"modal says {native}")
    got = await make_provider().status(InfraRef.from_json(ref.to_json()))
    assert got.phase is EXPECTED_PHASES[native]
    if native == "SUCCESS":
        assert got.exit_code == 0
    else:
        assert got.reason and f"modal says {native}" in got.reason
    if native == "FAILURE":
        assert got.exit_code == 3
    if native == "TIMEOUT":
        assert got.exit_code == 124


async def test_a_sandbox_that_failed_to_start_is_crashed_with_modals_message(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-init"))
    modal_fake.fail_to_start(ref.infra_id, "Secret 'db' is missing key 'PASSWORD'")
    got = await modal_provider.status(ref)
    assert got.phase is InfraPhase.CRASHED
    assert got.reason and "failed to start" in got.reason and "PASSWORD" in got.reason


async def test_terminated_is_cancelled_with_137(modal_fake: FakeModal,
                                                modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-term"))
    await modal_provider.cancel(ref)
    got = await modal_provider.status(ref)
    assert (got.phase, got.exit_code) == (InfraPhase.CANCELLED, 137)


def test_the_fallback_without_modal_internals_reads_returncode() -> None:
    class Handle:
        returncode = 124

    assert status.result_status(status.native_result(Handle())).phase is InfraPhase.FAILED
    Handle.returncode = None  # type: ignore[assignment]
    assert status.native_result(Handle()) is None


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
