"""modal:push submit against the fake Modal server: what reaches Modal, a retried submit
adopting its sandbox, explicit clients per pool, where the token and server come from."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from providers.base import InfraPhase, InfraRef, PermanentProviderError
from providers.modal import ModalProvider, console_url
from providers.modal.sandbox import ATTEMPT_TAG, DEPLOYMENT_TAG, POOL_TAG, RUN_TAG, sandbox_name
from tests.conftest import wait_for
from tests.fakes.modal import FakeModal
from tests.providers.modal_harness import (
    APP,
    POOL,
    TOKEN_ID,
    TOKEN_SECRET,
    make_provider,
    modal_fake,
    modal_provider,
    spec_for,
)

__all__ = ["modal_fake", "modal_provider"]  # fixtures


async def test_submit_sends_the_run_to_modal(modal_fake: FakeModal,
                                             modal_provider: ModalProvider) -> None:
    spec = spec_for(modal_fake, "run-1", cpu=0.5, memory=768, region="us-east",
                    cloud="aws", options={"workdir": "/srv"}, env={"FROM_POOL": "1"})
    ref = await modal_provider.submit(spec)
    sandbox = modal_fake.sandbox(ref.infra_id)
    definition = sandbox.definition
    assert list(definition.entrypoint_args) == spec.command
    assert definition.name == sandbox_name("run-1", 1)
    assert definition.resources.milli_cpu == 500 and definition.resources.memory_mb == 768
    assert definition.timeout_secs == 600 and definition.workdir == "/srv"
    assert list(definition.scheduler_placement.regions) == ["us-east"]
    assert sandbox.env == {"FROM_POOL": "1", **spec.env}
    assert sandbox.tags[RUN_TAG] == "run-1" and sandbox.tags[ATTEMPT_TAG] == "1"
    assert sandbox.tags[POOL_TAG] == POOL and sandbox.tags[DEPLOYMENT_TAG] == "dep-1"
    assert sandbox.tags["team"] == "data"
    assert modal_fake.images[definition.image_id][0] == "FROM python:3.12-slim"
    app_id = modal_fake.apps[("main", APP)]
    assert sandbox.app_id == app_id and ref.console_url == console_url(app_id)
    # The token went as Modal's metadata, on this client only.
    create = next(c for c in modal_fake.calls if c.name == "AppGetOrCreate")
    assert create.metadata["x-modal-token-id"] == TOKEN_ID
    # The reference carries everything a later process needs, the secret hidden.
    assert ref.connection["server_url"] == modal_fake.url
    assert ref.connection["app_name"] == APP and ref.connection["app_id"] == app_id
    assert TOKEN_SECRET not in repr(ref) and TOKEN_SECRET in json.dumps(ref.to_json())


async def test_no_image_means_debian_slim_with_the_pip_packages(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-slim", image=None,
                                               python_version="3.12",
                                               pip_packages=["pushpool", "pandas==2.2"]))
    image = modal_fake.images[modal_fake.sandbox(ref.infra_id).definition.image_id]
    assert any("pip install" in c and "pandas==2.2" in c and "pushpool" in c for c in image)
    assert modal_fake.count("ImageGetOrCreate") == 2  # the slim base, then the pip layer


# (EnvironmentGetOrCreate is not counted: modal caches environments per process.)
LOOKUPS = ("AppGetOrCreate", "ImageGetOrCreate", "SecretGetOrCreate")


def lookups(fake: FakeModal) -> dict[str, int]:
    return {name: fake.count(name) for name in LOOKUPS}


async def test_a_second_submit_of_a_template_makes_no_lookup_rpc(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    secret_id = modal_fake.add_secret("db")
    first = await modal_provider.submit(spec_for(modal_fake, "run-a", secrets=["db"]))
    assert lookups(modal_fake) == dict.fromkeys(LOOKUPS, 1)
    second = await modal_provider.submit(spec_for(modal_fake, "run-b", secrets=["db"]))
    assert lookups(modal_fake) == dict.fromkeys(LOOKUPS, 1)  # only the create went
    assert modal_fake.count("SandboxCreateV2") == 2
    for ref in (first, second):
        sandbox = modal_fake.sandbox(ref.infra_id)
        assert sandbox.secret_ids == [secret_id]
    assert modal_fake.sandbox(first.infra_id).definition.image_id == \
        modal_fake.sandbox(second.infra_id).definition.image_id
    # Other template content is other handles: its image and secret are looked up.
    modal_fake.add_secret("other")
    await modal_provider.submit(spec_for(modal_fake, "run-c", secrets=["other"],
                                         image="python:3.13-slim"))
    assert modal_fake.count("ImageGetOrCreate") == 2
    assert modal_fake.count("SecretGetOrCreate") == 2


async def test_a_burst_of_first_submits_looks_everything_up_once(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    modal_fake.add_secret("db")
    refs = await asyncio.gather(*(modal_provider.submit(
        spec_for(modal_fake, f"run-{i}", secrets=["db"])) for i in range(6)))
    assert len({ref.infra_id for ref in refs}) == 6
    assert lookups(modal_fake) == dict.fromkeys(LOOKUPS, 1)


async def test_a_secret_made_again_is_resolved_afresh(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    modal_fake.add_secret("db")
    await modal_provider.submit(spec_for(modal_fake, "run-a", secrets=["db"]))
    modal_fake.delete_secret("db")
    new_id = modal_fake.add_secret("db")
    ref = await modal_provider.submit(spec_for(modal_fake, "run-b", secrets=["db"]))
    assert modal_fake.sandbox(ref.infra_id).secret_ids == [new_id]
    assert modal_fake.count("SecretGetOrCreate") == 2


async def test_a_deleted_secret_fails_the_submit_naming_it(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    modal_fake.add_secret("db")
    await modal_provider.submit(spec_for(modal_fake, "run-a", secrets=["db"]))
    modal_fake.delete_secret("db")
    with pytest.raises(PermanentProviderError, match="'db' not found"):
        await modal_provider.submit(spec_for(modal_fake, "run-b", secrets=["db"]))


async def test_a_retried_submit_adopts_the_sandbox_it_made(modal_fake: FakeModal) -> None:
    spec = spec_for(modal_fake, "run-retry")
    first = await make_provider().submit(spec)
    modal_fake.finish(first.infra_id, 0)  # even after the sandbox ended
    again = make_provider()
    second = await again.submit(dataclasses.replace(spec, retried=True))
    assert second.infra_id == first.infra_id
    assert modal_fake.count("SandboxCreateV2") == 1
    assert len(modal_fake.sandboxes_tagged(**{RUN_TAG: "run-retry"})) == 1
    assert (await again.status(second)).phase is InfraPhase.SUCCEEDED
    await again.close()


async def test_a_concurrent_submit_that_lost_the_name_adopts_the_winner(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    spec = spec_for(modal_fake, "run-race")
    first = await modal_provider.submit(spec)
    # Another first call of the same attempt looks for nothing: its create collides on
    # the name, and it adopts the first sandbox.
    second = await make_provider().submit(spec)
    assert second.infra_id == first.infra_id
    assert modal_fake.count("SandboxCreateV2") == 2  # one made it, one was refused
    assert len(modal_fake.sandboxes) == 1


async def test_a_new_attempt_gets_its_own_sandbox(modal_fake: FakeModal,
                                                  modal_provider: ModalProvider) -> None:
    one = await modal_provider.submit(spec_for(modal_fake, "run-2", attempt=1))
    two = await modal_provider.submit(spec_for(modal_fake, "run-2", attempt=2))
    assert one.infra_id != two.infra_id
    assert modal_fake.sandbox(two.infra_id).name == sandbox_name("run-2", 2)


async def test_each_pool_has_its_own_client_and_server(modal_fake: FakeModal) -> None:
    other = FakeModal()
    other.start()
    try:
        provider = make_provider()
        a = await provider.submit(spec_for(modal_fake, "run-a"))
        b = await provider.submit(spec_for(other, "run-b"))
        assert a.infra_id in modal_fake.sandboxes and b.infra_id in other.sandboxes
        assert b.infra_id not in modal_fake.sandboxes
        assert {c.name for c in other.calls} >= {"AppGetOrCreate", "SandboxCreateV2"}
        await provider.close()
    finally:
        other.stop()


async def test_token_and_server_from_the_environment(modal_fake: FakeModal,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_SERVER_URL", modal_fake.url)
    monkeypatch.setenv("MODAL_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("MODAL_TOKEN_SECRET", TOKEN_SECRET)
    provider = make_provider()
    spec = spec_for(modal_fake, "run-env", server_url=None, credentials=None)
    ref = await provider.submit(spec)
    assert ref.connection["token_source"] == "environment"
    assert "token_secret" not in ref.connection  # each process reads its own environment
    assert ref.connection["server_url"] == modal_fake.url
    fresh = make_provider()
    assert (await fresh.status(InfraRef.from_json(ref.to_json()))).phase is InfraPhase.RUNNING
    await provider.close()
    await fresh.close()


async def test_no_token_anywhere_says_how_to_set_one(modal_fake: FakeModal,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_CONFIG_PATH", "/nonexistent/.modal.toml")
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    provider = make_provider()
    with pytest.raises(PermanentProviderError, match=r"credentials.*modal token new"):
        await provider.submit(spec_for(modal_fake, "run-none", credentials=None))
    await provider.close()


async def test_an_option_the_client_does_not_take_is_refused(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    with pytest.raises(PermanentProviderError, match=r"options\.no_such_keyword"):
        await modal_provider.submit(spec_for(modal_fake, "run-opt",
                                             options={"no_such_keyword": 1}))
    assert modal_fake.count("SandboxCreateV2") == 0


async def test_a_gpu_run_takes_modals_v1_sandbox_calls(modal_fake: FakeModal,
                                                       modal_provider: ModalProvider) -> None:
    spec = spec_for(modal_fake, "run-gpu", gpu="T4")
    ref = await modal_provider.submit(spec)
    assert modal_fake.count("SandboxCreate") == 1 and modal_fake.count("SandboxCreateV2") == 0
    assert modal_fake.sandbox(ref.infra_id).definition.resources.gpu_config.gpu_type == "T4"
    assert (await modal_provider.submit(spec)).infra_id == ref.infra_id  # found by name
    modal_fake.finish(ref.infra_id, 0, stdout="on a gpu\n")
    fresh = make_provider()
    assert (await fresh.status(ref)).phase is InfraPhase.SUCCEEDED
    lines = await wait_for(lambda: fresh.logs(ref, None), what="V1 logs")
    assert [line.message for line in lines.lines] == ["on a gpu"]
    await fresh.close()


async def test_a_retried_submit_adopts_a_gpu_sandbox_that_already_finished(
        modal_fake: FakeModal) -> None:
    spec = spec_for(modal_fake, "run-gpu-done", gpu="A10G")
    first = make_provider()
    ref = await first.submit(spec)
    await first.close()
    modal_fake.finish(ref.infra_id, 0)  # ended before the dispatcher stored the reference
    retry = make_provider()  # a fresh process, as after a crash
    again = await retry.submit(dataclasses.replace(spec, retried=True))
    assert again.infra_id == ref.infra_id
    assert modal_fake.count("SandboxCreate") == 1  # no second sandbox
    assert (await retry.status(again)).phase is InfraPhase.SUCCEEDED
    await retry.cleanup(again)  # the recorded id goes with the run
    assert all(not entries for entries in modal_fake.dicts.values())
    await retry.close()
