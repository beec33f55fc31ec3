"""modal:push errors: Modal's transient and permanent failures onto the two provider
errors with Modal's message, the deprecated client said plainly, no secret in messages."""

from __future__ import annotations

import socket

import pytest
from grpclib import Status

from providers.base import PermanentProviderError, RetryableProviderError
from providers.modal import ModalProvider
from providers.modal.adapter import connection_of
from providers.modal.errors import UPGRADE_HINT, client_version
from tests.fakes.modal import FakeModal
from tests.providers.modal_harness import (
    TOKEN_SECRET,
    make_provider,
    modal_fake,
    modal_provider,
    spec_for,
)

__all__ = ["modal_fake", "modal_provider"]  # fixtures


async def test_a_deprecated_client_says_so_and_names_the_upgrade(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    modal_fake.deprecate_client(minimum="2.0")
    with pytest.raises(PermanentProviderError) as caught:
        await modal_provider.submit(spec_for(modal_fake, "run-old"))
    message = str(caught.value)
    assert "no longer accepts this dispatcher's Modal client" in message
    assert f"modal {client_version()}" in message and client_version() == "1.6.4"
    assert UPGRADE_HINT in message and "pip install -U 'pushpool[modal]'" in message
    assert "modal>=2.0" in message  # Modal's own words follow
    assert TOKEN_SECRET not in message


async def test_status_of_a_deprecated_client_says_so_too(modal_fake: FakeModal,
                                                         modal_provider: ModalProvider) -> None:
    ref = await modal_provider.submit(spec_for(modal_fake, "run-old-status"))
    modal_fake.deprecate_client()
    with pytest.raises(PermanentProviderError, match="pushpool\\[modal\\]"):
        await make_provider().status(ref)


async def test_a_wrong_token_is_permanent_with_modals_message(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    spec = spec_for(modal_fake, "run-auth",
                    credentials={"token_id": "ak-wrong", "token_secret": "as-wrong-secret"})
    with pytest.raises(PermanentProviderError) as caught:
        await modal_provider.submit(spec)
    assert "Token ID or secret is invalid" in str(caught.value)
    assert "credentials" in str(caught.value) and "as-wrong-secret" not in str(caught.value)


async def test_a_missing_secret_is_permanent_with_modals_message(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    with pytest.raises(PermanentProviderError, match="Secret 'db-creds' not found"):
        await modal_provider.submit(spec_for(modal_fake, "run-secret", secrets=["db-creds"]))
    modal_fake.add_secret("db-creds")
    ref = await modal_provider.submit(spec_for(modal_fake, "run-secret", secrets=["db-creds"]))
    assert modal_fake.sandbox(ref.infra_id).secret_ids == [modal_fake.secrets[("main",
                                                                               "db-creds")]]


async def test_an_image_that_does_not_build_is_permanent_with_modals_message(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    modal_fake.break_image("FROM ghcr.io/nope/missing", "manifest unknown: ghcr.io/nope/missing")
    with pytest.raises(PermanentProviderError, match="manifest unknown"):
        await modal_provider.submit(spec_for(modal_fake, "run-img",
                                             image="ghcr.io/nope/missing:1"))
    assert modal_fake.count("SandboxCreateV2") == 0


@pytest.mark.parametrize(("status", "kind"), [
    (Status.RESOURCE_EXHAUSTED, RetryableProviderError),
    (Status.PERMISSION_DENIED, PermanentProviderError),
    (Status.INVALID_ARGUMENT, PermanentProviderError),
    (Status.NOT_FOUND, PermanentProviderError),
])
async def test_create_failures_map_by_kind(status: Status, kind: type, modal_fake: FakeModal,
                                           modal_provider: ModalProvider) -> None:
    modal_fake.fail_next("SandboxCreateV2", status, f"fake says {status.name}")
    with pytest.raises(kind) as caught:
        await modal_provider.submit(spec_for(modal_fake, f"run-{status.name}"))
    assert type(caught.value) is kind and f"fake says {status.name}" in str(caught.value)
    if kind is RetryableProviderError:
        assert caught.value.throttled  # type: ignore[attr-defined]


async def test_an_unreachable_server_is_retryable_and_bounded(modal_fake: FakeModal) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = make_provider(call_timeout=0.5)
    with pytest.raises(RetryableProviderError, match=r"longer than 0\.5 s"):
        await provider.submit(spec_for(modal_fake, "run-down",
                                       server_url=f"http://127.0.0.1:{port}"))
    await provider.close()


async def test_an_rpc_the_fake_does_not_know_is_refused_loudly(modal_fake: FakeModal) -> None:
    import modal
    from modal.exception import UnimplementedError

    provider = make_provider()
    ref = await provider.submit(spec_for(modal_fake, "run-strict"))
    client = await provider.clients.client(connection_of(ref))
    sandbox = await modal.Sandbox.from_id.aio(ref.infra_id, client=client)
    with pytest.raises(UnimplementedError, match="SandboxTagsGetV2 is not implemented"):
        await sandbox.get_tags.aio()
    assert modal_fake.unimplemented == ["SandboxTagsGetV2"]
    modal_fake.unimplemented.clear()  # expected here; any other test fails on it
    await provider.close()
