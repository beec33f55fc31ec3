"""modal:push provisioning: Modal needs only the pool's app, looked up (made on apply)."""

from __future__ import annotations

from providers.base import ProvisionStep
from providers.modal import ModalProvider
from tests.fakes.modal import FakeModal
from tests.providers.modal_harness import modal_config, modal_fake, modal_provider

__all__ = ["modal_fake", "modal_provider"]  # fixtures


async def test_provision_plans_then_makes_the_app(modal_fake: FakeModal,
                                                  modal_provider: ModalProvider) -> None:
    options = modal_config(modal_fake)
    steps: list[ProvisionStep] = []
    plan = await modal_provider.provision("etl", options, apply=False, on_step=steps.append)
    assert [(s.resource, s.name, s.action) for s in plan.steps] == [
        ("modal app", "pushpool-etl", "create")]
    assert steps == plan.steps and plan.template_defaults == {"app_name": "pushpool-etl"}
    assert ("main", "pushpool-etl") not in modal_fake.apps  # a plan changes nothing
    await modal_provider.provision("etl", options, apply=True)
    assert ("main", "pushpool-etl") in modal_fake.apps
    again = await modal_provider.provision("etl", options, apply=False)
    assert [s.action for s in again.steps] == ["exists"] and again.changes == 0


async def test_deprovision_keeps_the_app_and_says_how_to_remove_it(
        modal_fake: FakeModal, modal_provider: ModalProvider) -> None:
    plan = await modal_provider.deprovision("etl", {"template_defaults": {"app_name": "a1"}},
                                            apply=True)
    assert [(s.name, s.action) for s in plan.steps] == [("a1", "keep")]
    assert "modal app stop a1" in plan.steps[0].detail
    assert modal_fake.calls == []  # nothing asked of Modal
