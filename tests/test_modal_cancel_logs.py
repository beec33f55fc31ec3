"""modal:push cancel, cleanup and logs against the fake Modal server."""

from __future__ import annotations

import pytest

from providers.base import InfraPhase, InfraRef, PermanentProviderError
from providers.modal import ModalProvider
from providers.modal.logs import make_cursor, parse_cursor
from tests.conftest import wait_for
from tests.fakes.modal import FakeModal
from tests.providers.modal_harness import make_provider, modal_fake, modal_provider, spec_for

__all__ = ["modal_fake", "modal_provider"]  # fixtures


def stored(ref: InfraRef) -> InfraRef:
    return InfraRef.from_json(ref.to_json())


async def test_cancel_terminates_the_sandbox(modal_fake: FakeModal,
                                             modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-c"))
    other = make_provider()
    await other.cancel(stored(ref), grace_seconds=5)
    assert modal_fake.count("SandboxTerminateV2") == 1
    assert (await other.status(stored(ref))).phase is InfraPhase.CANCELLED
    await other.close()


async def test_cancel_leaves_a_finished_or_unknown_sandbox_alone(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-done"))
    modal_fake.finish(ref.infra_id, 0)
    await modal_provider.cancel(ref)
    await modal_provider.cancel(InfraRef("sb-v2-31337", ref.connection))
    assert modal_fake.count("SandboxTerminateV2") == 0
    assert (await modal_provider.status(ref)).phase is InfraPhase.SUCCEEDED


async def test_cleanup_leaves_nothing_running(modal_fake: FakeModal,
                                              modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-clean"))
    modal_fake.finish(ref.infra_id, 0, stdout="bye\n")
    await modal_provider.logs(ref, None)
    assert modal_provider.readers.get(ref.infra_id) is not None
    await modal_provider.cleanup(ref)
    assert modal_provider.readers.get(ref.infra_id) is None
    straggler = await modal_provider.submit(spec_for(modal_fake, "run-straggler"))
    await make_provider().cleanup(stored(straggler))  # still running: terminated
    assert not modal_fake.sandbox(straggler.infra_id).running


async def test_logs_merge_stdout_and_stderr_in_order(modal_fake: FakeModal,
                                                     modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-logs"))
    modal_fake.write(ref.infra_id, stdout="one\ntwo\n", stderr="warn\n")
    batch = await modal_provider.logs(ref, None)
    assert [(line.stream, line.message) for line in batch.lines if line.stream == "stdout"] \
        == [("stdout", "one"), ("stdout", "two")]
    assert [line.message for line in batch.lines if line.stream == "stderr"] == ["warn"]
    assert batch.cursor == make_cursor(8, 5)
    # A partial line waits for its newline; nothing is handed out twice.
    modal_fake.write(ref.infra_id, stdout="thr")
    partial = await modal_provider.logs(ref, batch.cursor)
    assert partial.lines == [] and partial.cursor == batch.cursor
    modal_fake.finish(ref.infra_id, 0, stdout="ee\nfour")
    rest: list[str] = []
    cursor: str | None = partial.cursor

    async def drained() -> bool:
        nonlocal cursor
        got = await modal_provider.logs(ref, cursor)
        rest.extend(line.message for line in got.lines)
        cursor = got.cursor
        return "four" in rest  # the last line has no newline: handed out at the end

    await wait_for(drained, what="the rest of the output")
    assert rest == ["three", "four"]
    assert (await modal_provider.logs(ref, cursor)).lines == []


async def test_another_process_continues_from_the_cursor(modal_fake: FakeModal,
                                                         modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-cursor"))
    modal_fake.write(ref.infra_id, stdout="a\nb\n", stderr="x\n")
    first = await modal_provider.logs(ref, None)
    assert {line.message for line in first.lines} == {"a", "b", "x"}
    modal_fake.finish(ref.infra_id, 0, stdout="c\n", stderr="y\n")
    fresh = make_provider()
    got = await wait_for(lambda: fresh.logs(stored(ref), first.cursor), what="new lines")
    assert sorted(line.message for line in got.lines) == ["c", "y"]
    assert parse_cursor(got.cursor) == (6, 4)
    await fresh.close()


async def test_a_cursor_that_is_not_modals_is_refused(modal_fake: FakeModal,
                                                      modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-badcursor"))
    with pytest.raises(PermanentProviderError, match="cursor"):
        await modal_provider.logs(ref, "page-2")


async def test_logs_of_a_missing_sandbox_are_empty(modal_fake: FakeModal,
                                                   modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-nolog"))
    batch = await modal_provider.logs(InfraRef("sb-v2-777", ref.connection), None)
    assert batch.lines == [] and batch.cursor is None
