"""cloud-run:push ``--provision-infra``: plan, apply, a rerun that changes nothing, a key
minted once, and deprovisioning that removes what it made and nothing else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from providers.base import PermanentProviderError, ProvisionStep
from providers.cloud_run import CloudRunProvider
from tests.fakes.cloud_run import FakeGoogle, shared_fake
from tests.providers.cloud_run_harness import make_provider

POOL = "Nightly ETL"


@pytest.fixture
def fake() -> FakeGoogle:
    made = shared_fake()
    made.reset()
    return made


@pytest.fixture
async def provider(fake: FakeGoogle) -> AsyncIterator[CloudRunProvider]:
    made = make_provider()
    yield made
    await made.close()


def options(fake: FakeGoogle, **extra: Any) -> dict[str, Any]:
    return {"project": fake.project, "region": fake.region, "endpoint_url": fake.url, **extra}


async def test_plan_apply_and_a_rerun_that_changes_nothing(fake: FakeGoogle,
                                                           provider: CloudRunProvider) -> None:
    plan = await provider.provision(POOL, options(fake), apply=False)
    assert plan.changes == len(plan.steps) == 6  # 3 APIs, repository, account, binding
    assert fake.provisioning.repositories == {} and fake.provisioning.accounts == {}
    seen: list[ProvisionStep] = []
    done = await provider.provision(POOL, options(fake), apply=True, on_step=seen.append)
    assert len(seen) == len(done.steps)
    prov = fake.provisioning
    assert prov.enabled[fake.project] == {"run.googleapis.com", "artifactregistry.googleapis.com",
                                          "iam.googleapis.com"}
    (repo_name, repo), = prov.repositories.items()
    assert repo["format"] == "DOCKER" and repo["labels"]["pushpool-pool"] == "nightly-etl"
    (email, account), = prov.accounts.items()
    assert "pushpool-pool=Nightly ETL" in account["description"]
    assert prov.members(repo_name, "roles/artifactregistry.reader") == [
        f"serviceAccount:{email}"]
    assert done.template_defaults == {"project": fake.project, "region": fake.region,
                                      "service_account_name": email}
    assert "docker.pkg.dev" in done.target
    assert prov.keys == {}  # keyless by default
    again = await provider.provision(POOL, options(fake), apply=False)
    assert again.changes == 0 and {s.action for s in again.steps} == {"exists"}
    calls = sum(v for k, v in fake.server.calls.items() if k.endswith(("create", "enable",
                                                                       "setIamPolicy")))
    await provider.provision(POOL, options(fake), apply=True)
    assert calls == sum(v for k, v in fake.server.calls.items()
                        if k.endswith(("create", "enable", "setIamPolicy")))


async def test_a_key_is_minted_once_and_kept_secret(fake: FakeGoogle,
                                                    provider: CloudRunProvider) -> None:
    done = await provider.provision(POOL, options(fake, mint_key=True), apply=True)
    credentials = done.template_defaults["credentials"]
    key = json.loads(credentials["service_account_key"])
    assert credentials["kind"] == "service_account_key" and key["type"] == "service_account"
    dispatcher = key["client_email"]
    assert len(fake.provisioning.keys[dispatcher]) == 1
    project = f"projects/{fake.project}"
    assert f"serviceAccount:{dispatcher}" in fake.provisioning.members(
        project, "roles/run.developer")
    run_account = done.template_defaults["service_account_name"]
    assert fake.provisioning.members(f"{project}/serviceAccounts/{run_account}",
                                     "roles/iam.serviceAccountUser") == [
        f"serviceAccount:{dispatcher}"]
    assert key["private_key"] not in " ".join(f"{s.name} {s.detail}" for s in done.steps)
    again = await provider.provision(POOL, options(fake, mint_key=True), apply=True)
    assert again.changes == 0 and "credentials" not in again.template_defaults
    assert len(fake.provisioning.keys[dispatcher]) == 1  # never minted twice


async def test_deprovision_removes_what_it_made_and_nothing_else(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    await provider.provision(POOL, options(fake, mint_key=True), apply=True)
    # Something that is not the pool's: an account and a project binding of someone else.
    prov = fake.provisioning
    prov.accounts["other@pushpool-test.iam.gserviceaccount.com"] = {
        "email": "other@pushpool-test.iam.gserviceaccount.com", "description": "not ours"}
    project = f"projects/{fake.project}"
    policy = prov.policies[project]
    policy["bindings"].append({"role": "roles/owner", "members": ["user:boss@example.com"]})
    record = {"options": options(fake, mint_key=True)}
    plan = await provider.deprovision(POOL, record, apply=False)
    actions = {(s.resource, s.action) for s in plan.steps}
    assert ("Artifact Registry repository", "delete") in actions and ("API", "keep") in actions
    assert prov.repositories  # planning removes nothing
    await provider.deprovision(POOL, record, apply=True)
    assert prov.repositories == {}
    assert list(prov.accounts) == ["other@pushpool-test.iam.gserviceaccount.com"]
    assert prov.members(project, "roles/owner") == ["user:boss@example.com"]
    assert prov.members(project, "roles/run.developer") == []
    assert prov.enabled[fake.project]  # APIs stay on
    again = await provider.deprovision(POOL, record, apply=False)
    assert {s.action for s in again.steps} <= {"keep", "absent"}


async def test_another_pools_account_is_never_taken_over(fake: FakeGoogle,
                                                         provider: CloudRunProvider) -> None:
    done = await provider.provision("etl", options(fake), apply=True)
    email = done.template_defaults["service_account_name"]
    fake.provisioning.accounts[email]["description"] = "someone else's"
    with pytest.raises(PermanentProviderError, match="service_account_id"):
        await provider.provision("etl", options(fake), apply=False)


async def test_provisioning_errors_say_what_was_done(fake: FakeGoogle,
                                                     provider: CloudRunProvider) -> None:
    fake.server.fail_next("serviceAccounts.create", 403,
                          "Permission 'iam.serviceAccounts.create' denied on project.")
    with pytest.raises(PermanentProviderError) as caught:
        await provider.provision(POOL, options(fake), apply=True)
    message = str(caught.value)
    assert "iam.serviceAccounts.create" in message and "Done: " in message
    assert "run the same command again" in message
    done = await provider.provision(POOL, options(fake), apply=True)  # the rerun finishes
    assert fake.provisioning.accounts and done.template_defaults["service_account_name"]


async def test_provisioning_needs_a_project(provider: CloudRunProvider,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(PermanentProviderError, match="project"):
        await provider.provision(POOL, {"endpoint_url": "http://127.0.0.1:9"}, apply=False)
    with pytest.raises(PermanentProviderError, match="loopback"):
        await provider.provision(POOL, {"project": "p-123456",
                                        "endpoint_url": "http://example.com"}, apply=False)
