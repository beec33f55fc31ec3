"""The ACI adapter against the fake ARM with the real SDK: submit, status, cancel, logs,
cleanup, throttling and Azure's errors, beyond the shared conformance suite."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys

import pytest

from providers.aci import AciProvider
from providers.aci.body import group_name
from providers.base import (
    InfraPhase,
    PermanentProviderError,
    RetryableProviderError,
)
from tests.fakes.azure import FakeAzure
from tests.providers.aci_harness import (
    RESOURCE_GROUP,
    make_provider,
    spec_for,
)

RG = RESOURCE_GROUP

# The fixtures aci_fake (the shared fake, reset) and aci_provider.
pytest_plugins = ["tests.fakes.azure.fixtures"]


async def test_submit_makes_one_tagged_group_with_secrets_hidden(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    ref = await aci_provider.submit(spec_for(aci_fake, "run-a", 1))
    name = group_name("run-a", 1)
    group = aci_fake.aci.groups[(aci_fake.subscription, RG.lower(), name)]
    assert group["tags"]["pushpool:run-id"] == "run-a"
    assert group["tags"]["pushpool:attempt"] == "1"
    assert group["tags"]["pushpool:pool"] == "aci-pool"
    env = {e["name"]: e for e in group["properties"]["containers"][0]["properties"]
           ["environmentVariables"]}
    assert env["PUSHPOOL_RUN_TOKEN"] == {"name": "PUSHPOOL_RUN_TOKEN", "secureValue": "tok-secret"}
    assert env["PUSHPOOL_RUN_ID"]["value"] == "run-a"
    assert group["properties"]["restartPolicy"] == "Never"
    assert ref.connection["group"] == name and ref.connection["resource_group"] == RG
    assert ref.infra_id.endswith(f"/containergroups/{name}")
    assert aci_fake.client_secret not in repr(ref)
    assert ref.connection["client_secret"] == aci_fake.client_secret  # for a fresh process
    # The production sign-in path ran: a token from the fake's Entra endpoint.
    assert aci_fake.server.count("token") == 1


async def test_retry_after_a_crash_adopts_the_group_instead_of_making_another(
        aci_fake: FakeAzure) -> None:
    spec = spec_for(aci_fake, "run-crash", 1)
    first = make_provider()
    ref = await first.submit(spec)  # the answer is "lost": the dispatcher crashed
    await first.close()
    aci_fake.aci.start(RG, group_name("run-crash", 1))
    again = make_provider()  # a fresh process
    try:
        ref2 = await again.submit(dataclasses.replace(spec, retried=True))
        assert ref2.infra_id == ref.infra_id
        assert aci_fake.server.count("containerGroups.create") == 1
        assert len(aci_fake.aci.names(RG)) == 1
        assert (await again.status(ref2)).phase is InfraPhase.RUNNING  # not restarted
        new = await again.submit(spec_for(aci_fake, "run-crash", 2))
        assert new.infra_id != ref.infra_id and len(aci_fake.aci.names(RG)) == 2
    finally:
        await again.close()


async def test_a_foreign_group_with_the_name_is_refused(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    await aci_provider.submit(spec_for(aci_fake, "run-x", 1))
    group = aci_fake.aci.groups[(aci_fake.subscription, RG.lower(), group_name("run-x", 1))]
    group["tags"] = {"owner": "someone else"}
    with pytest.raises(PermanentProviderError, match="was not made for this run"):
        await aci_provider.submit(dataclasses.replace(spec_for(aci_fake, "run-x", 1),
                                                      retried=True))


async def test_a_first_call_puts_at_once_and_only_a_retried_one_reads_first(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    spec = spec_for(aci_fake, "run-first", 1)
    await aci_provider.submit(spec)
    assert aci_fake.server.count("containerGroups.get") == 0
    assert aci_fake.server.count("containerGroups.create") == 1
    await aci_provider.submit(dataclasses.replace(spec, retried=True))  # adopts it
    assert aci_fake.server.count("containerGroups.get") == 1
    assert aci_fake.server.count("containerGroups.create") == 1


@pytest.mark.parametrize(("move", "phase", "exit_code", "reason"), [
    ("nothing", InfraPhase.PENDING, None, None),
    ("start", InfraPhase.RUNNING, None, None),
    ("finish0", InfraPhase.SUCCEEDED, 0, None),
    ("finish3", InfraPhase.FAILED, 3, "exited with code 3"),
    ("stop", InfraPhase.CANCELLED, 137, "stopped"),
    ("provision_failed", InfraPhase.CRASHED, None, "SubnetNotFound: the subnet is gone"),
    ("pull_failed", InfraPhase.CRASHED, None, "Failed to pull image"),
    ("timeout", InfraPhase.CRASHED, None, "start_timeout"),
    ("deleting", InfraPhase.CANCELLED, None, "being deleted"),
    ("missing", InfraPhase.MISSING, None, "no such container group"),
])
async def test_every_status_mapping_through_the_fake(
        aci_fake: FakeAzure, aci_provider: AciProvider, move: str, phase: InfraPhase,
        exit_code: int | None, reason: str | None) -> None:
    # A list shows a failed pull only as "pending"; groups pending longer than
    # pending_detail_after (20 s by default; 0 here) are read in full too.
    aci_provider.settings = dataclasses.replace(aci_provider.settings,
                                                pending_detail_after=0.0)
    extra = {"start_timeout": 1} if move == "timeout" else {}
    ref = await aci_provider.submit(spec_for(aci_fake, f"run-{move}", 1, **extra))
    name, aci = str(ref.connection["group"]), aci_fake.aci
    if move == "timeout":
        ref = type(ref)(ref.infra_id, {**ref.connection,
                                       "submitted_at": ref.connection["submitted_at"] - 5})
    if move in ("start", "finish0", "finish3", "stop"):
        aci.start(RG, name)
    if move.startswith("finish"):
        aci.finish(RG, name, int(move[-1]))
    if move == "stop":
        await aci_provider.cancel(ref)
    if move == "provision_failed":
        aci.fail_provisioning(RG, name, "SubnetNotFound", "the subnet is gone")
    if move == "pull_failed":
        aci.fail_image_pull(RG, name)
    if move == "deleting":
        aci.start(RG, name)
        aci.set_state(RG, name, provisioning="Deleting")
    if move == "missing":
        aci.forget(RG, name)
    status = await aci_provider.status(ref)
    assert status.phase is phase
    assert status.exit_code == exit_code
    if reason:
        assert reason in (status.reason or "")
    # status_many (a list per resource group) agrees with status (a GET).
    many = await aci_provider.status_many([ref, ref])
    assert many[ref.infra_id].phase is phase


async def test_a_503_while_reading_status_is_retried_and_never_ends_the_run(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    ref = await aci_provider.submit(spec_for(aci_fake, "run-503", 1))
    aci_fake.aci.start(RG, str(ref.connection["group"]))
    aci_fake.server.fail_next("containerGroups.get", 503, "ServiceUnavailable")
    assert (await aci_provider.status(ref)).phase is InfraPhase.RUNNING  # retried at once
    aci_fake.server.fail_next("containerGroups.get", 503, "ServiceUnavailable", times=10)
    with pytest.raises(RetryableProviderError, match="ServiceUnavailable"):
        await aci_provider.status(ref)
    # Still failing: status_many raises (all reads failed) or leaves it out; never final.
    with pytest.raises(RetryableProviderError):
        await aci_provider.status_many([ref])
    aci_fake.server.faults.clear()
    aci_fake.aci.finish(RG, str(ref.connection["group"]), 0)
    assert (await aci_provider.status_many([ref]))[ref.infra_id].phase is InfraPhase.SUCCEEDED


async def test_status_reads_cost_one_list_per_resource_group_per_pass(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    aci_fake.resources.add_resource_group(aci_fake.subscription, "other-rg")
    refs = [await aci_provider.submit(spec_for(aci_fake, f"run-{i}", 1)) for i in range(6)]
    refs += [await aci_provider.submit(spec_for(aci_fake, f"run-o{i}", 1,
                                                resource_group_name="other-rg"))
             for i in range(4)]
    aci_fake.server.reset()
    statuses = await aci_provider.status_many(refs)
    assert {s.phase for s in statuses.values()} == {InfraPhase.PENDING}
    assert len(statuses) == 10
    assert aci_fake.server.count("containerGroups.list") == 2
    assert aci_fake.server.count("containerGroups.get") == 0
    # Two start: pending at the last read and provisioned now, they have started, which
    # the list says without a GET.
    for ref in refs[:2]:
        aci_fake.aci.start(RG, str(ref.connection["group"]))
    aci_fake.server.reset()
    statuses = await aci_provider.status_many(refs)
    assert [statuses[r.infra_id].phase for r in refs[:3]] == [
        InfraPhase.RUNNING, InfraPhase.RUNNING, InfraPhase.PENDING]
    assert aci_fake.server.count("containerGroups.list") == 2
    assert aci_fake.server.count("containerGroups.get") == 0
    # From then on the list cannot tell running from finished, so those two (and only
    # those) are read in full.
    aci_fake.aci.finish(RG, str(refs[0].connection["group"]), 0)
    aci_fake.server.reset()
    statuses = await aci_provider.status_many(refs)
    assert [statuses[r.infra_id].phase for r in refs[:3]] == [
        InfraPhase.SUCCEEDED, InfraPhase.RUNNING, InfraPhase.PENDING]
    assert aci_fake.server.count("containerGroups.list") == 2
    assert aci_fake.server.count("containerGroups.get") == 2


async def test_a_process_that_did_not_see_a_group_pending_reads_it_in_full(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    # A group that ran and finished between two reads is provisioned as well: only a
    # process that saw it pending may take the list's word that it has started.
    refs = [await aci_provider.submit(spec_for(aci_fake, f"run-f{i}", 1)) for i in range(3)]
    for ref in refs:
        aci_fake.aci.start(RG, str(ref.connection["group"]))
        aci_fake.aci.finish(RG, str(ref.connection["group"]), 0)
    fresh = make_provider()  # a tick, or a replica that took the runs over
    aci_fake.server.reset()
    try:
        statuses = await fresh.status_many(refs)
        assert {s.phase for s in statuses.values()} == {InfraPhase.SUCCEEDED}
        assert aci_fake.server.count("containerGroups.get") == 3
    finally:
        await fresh.close()


async def test_the_read_budget_leaves_runs_out_instead_of_exceeding_arm_limits(
        aci_fake: FakeAzure) -> None:
    provider = make_provider(read_burst=3.0, read_rate=0.001)
    try:
        refs = [await provider.submit(spec_for(aci_fake, f"run-b{i}", 1)) for i in range(5)]
        for ref in refs:
            aci_fake.aci.start(RG, str(ref.connection["group"]))
        aci_fake.server.reset()
        statuses = await provider.status_many(refs)  # started: the list says so
        assert {s.phase for s in statuses.values()} == {InfraPhase.RUNNING}
        assert aci_fake.server.count("containerGroups.list", "containerGroups.get") == 1
        statuses = await provider.status_many(refs)  # now each needs a GET
        assert aci_fake.server.count("containerGroups.list", "containerGroups.get") <= 3
        assert 0 < len(statuses) < 5  # the rest: next pass
    finally:
        await provider.close()


async def test_cancel_stops_a_running_group_and_deletes_a_provisioning_one(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    running = await aci_provider.submit(spec_for(aci_fake, "run-c1", 1))
    aci_fake.aci.start(RG, str(running.connection["group"]))
    await aci_provider.cancel(running, grace_seconds=1)
    status = await aci_provider.status(running)
    assert status.phase is InfraPhase.CANCELLED
    assert aci_fake.server.count("containerGroups.stop") == 1
    pending = await aci_provider.submit(spec_for(aci_fake, "run-c2", 1))
    await aci_provider.cancel(pending)  # 409 ContainerGroupTransitioning -> delete
    assert aci_fake.server.count("containerGroups.delete") == 1
    # Deleted (the dispatcher maps MISSING while cancelling to CANCELLED).
    assert (await aci_provider.status(pending)).phase is InfraPhase.MISSING
    assert str(pending.connection["group"]) not in aci_fake.aci.names(RG)
    await aci_provider.cancel(pending)  # gone already: nothing to do, no error


async def test_logs_come_in_order_without_repeats_across_polls(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    ref = await aci_provider.submit(spec_for(aci_fake, "run-logs", 1))
    name = str(ref.connection["group"])
    aci_fake.aci.start(RG, name)
    await aci_provider.status(ref)  # running: logs are read from now on
    aci_fake.aci.write_logs(RG, name, ["one", "two"])
    first = await aci_provider.logs(ref, None)
    assert [line.message for line in first.lines] == ["one", "two"]
    aci_fake.aci.write_logs(RG, name, ["three", "three", "four"], same_time=True)
    second = await aci_provider.logs(ref, first.cursor)
    assert [line.message for line in second.lines] == ["three", "three", "four"]
    third = await aci_provider.logs(ref, second.cursor)
    assert third.lines == [] and third.cursor == second.cursor
    calls = aci_fake.server.count("containers.logs")
    assert calls == 3


async def test_cleanup_deletes_the_group_unless_kept(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    ref = await aci_provider.submit(spec_for(aci_fake, "run-clean", 1))
    kept = await aci_provider.submit(spec_for(aci_fake, "run-keep", 1,
                                              keep_container_group=True))
    for r in (ref, kept):
        aci_fake.aci.start(RG, str(r.connection["group"]))
        aci_fake.aci.finish(RG, str(r.connection["group"]), 0)
    aci_fake.aci.delete_polls = 2  # 202 + Azure-AsyncOperation, polled until done
    await aci_provider.cleanup(ref)
    await aci_provider.cleanup(kept)
    assert aci_fake.aci.names(RG) == [str(kept.connection["group"])]
    assert aci_fake.server.op_polls >= 2
    await aci_provider.cleanup(ref)  # twice: already gone, fine


async def test_a_429_is_retryable_honours_retry_after_and_holds_creates_back(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    aci_fake.server.fail_next("containerGroups.create", 429, "TooManyRequests",
                              "Too many container group creates.", retry_after=30)
    with pytest.raises(RetryableProviderError) as caught:
        await aci_provider.submit(spec_for(aci_fake, "run-t1", 1))
    assert caught.value.throttled and caught.value.retry_after == 30
    assert "Too many container group creates" in str(caught.value)
    creates = aci_fake.server.count("containerGroups.create")
    with pytest.raises(RetryableProviderError) as held:  # refused before calling Azure
        await aci_provider.submit(spec_for(aci_fake, "run-t2", 1))
    assert held.value.retry_after is not None and held.value.retry_after > 25
    assert aci_fake.server.count("containerGroups.create") == creates


async def test_the_create_budget_keeps_under_acis_limits(aci_fake: FakeAzure) -> None:
    provider = make_provider(creates_per_5min=3, creates_per_hour=300, max_create_wait=0.0)
    try:
        for i in range(3):
            await provider.submit(spec_for(aci_fake, f"run-q{i}", 1))
        with pytest.raises(RetryableProviderError, match="create limit"):
            await provider.submit(spec_for(aci_fake, "run-q3", 1))
        assert aci_fake.server.count("containerGroups.create") == 3
    finally:
        await provider.close()


async def test_deletes_are_paced_by_the_delete_budget(aci_fake: FakeAzure) -> None:
    provider = make_provider(deletes_per_5min=2, deletes_per_hour=300, max_delete_wait=0.0,
                             cleanup_wait=0.0)
    try:
        refs = [await provider.submit(spec_for(aci_fake, f"run-d{i}", 1)) for i in range(4)]
        for ref in refs[:3]:
            aci_fake.aci.start(RG, str(ref.connection["group"]))
            aci_fake.aci.finish(RG, str(ref.connection["group"]), 0)
        await provider.cleanup(refs[0])
        await provider.cleanup(refs[1])
        with pytest.raises(RetryableProviderError, match="delete limit") as held:
            await provider.cleanup(refs[2])
        assert held.value.throttled and (held.value.retry_after or 0) > 100
        # Cancel of a group still provisioning deletes it: the same budget holds it back.
        with pytest.raises(RetryableProviderError, match="delete limit"):
            await provider.cancel(refs[3])
        assert aci_fake.server.count("containerGroups.delete") == 2
        assert str(refs[2].connection["group"]) in aci_fake.aci.names(RG)
    finally:
        await provider.close()


async def test_a_429_on_delete_pauses_deletes_for_its_retry_after(
        aci_fake: FakeAzure) -> None:
    provider = make_provider(max_delete_wait=0.0, cleanup_wait=0.0)
    try:
        refs = [await provider.submit(spec_for(aci_fake, f"run-r{i}", 1)) for i in range(2)]
        aci_fake.server.fail_next("containerGroups.delete", 429, "TooManyRequests",
                                  "Too many container group deletes.", retry_after=30)
        with pytest.raises(RetryableProviderError) as caught:
            await provider.cleanup(refs[0])
        assert caught.value.throttled and caught.value.retry_after == 30
        assert "Too many container group deletes" in str(caught.value)
        with pytest.raises(RetryableProviderError) as held:  # refused before calling Azure
            await provider.cancel(refs[1])
        assert held.value.retry_after is not None and held.value.retry_after > 25
        assert aci_fake.server.count("containerGroups.delete") == 1
        assert provider.create_budget(aci_fake.subscription).wait_time() == 0  # creates go on
    finally:
        await provider.close()


async def test_cleanup_waits_out_a_retry_after_and_deletes(aci_fake: FakeAzure) -> None:
    # Windows this wide refill in a tenth of a second once the 429 has drained them.
    provider = make_provider(cleanup_wait=5.0, deletes_per_5min=3000, deletes_per_hour=36000)
    try:
        ref = await provider.submit(spec_for(aci_fake, "run-w", 1))
        aci_fake.server.fail_next("containerGroups.delete", 429, "TooManyRequests",
                                  "Too many container group deletes.", retry_after=0.2)
        await provider.cleanup(ref)
        assert aci_fake.server.count("containerGroups.delete") == 2
        assert str(ref.connection["group"]) not in aci_fake.aci.names(RG)
        assert provider.delete_budget(aci_fake.subscription).throttles == 1
    finally:
        await provider.close()


@pytest.mark.parametrize(("status", "code", "message", "error", "hint"), [
    (400, "InaccessibleImage", "The image 'nope:1' in container group 'x' is not accessible.",
     PermanentProviderError, "image"),
    (409, "ContainerGroupQuotaReached", "container group quota 'ContainerGroups' exceeded",
     PermanentProviderError, "quota"),
    (403, "AuthorizationFailed", "does not have authorization to perform action",
     PermanentProviderError, "Contributor"),
    (500, "InternalServerError", "Encountered internal server error.",
     RetryableProviderError, ""),
    (409, "AnotherOperationInProgress", "Another operation is in progress.",
     RetryableProviderError, ""),
])
async def test_azure_errors_keep_azures_message(
        aci_fake: FakeAzure, aci_provider: AciProvider, status: int, code: str, message: str,
        error: type[Exception], hint: str) -> None:
    aci_fake.server.fail_next("containerGroups.create", status, code, message)
    with pytest.raises(error) as caught:
        await aci_provider.submit(spec_for(aci_fake, f"run-e{status}{code[:4]}", 1))
    assert message in str(caught.value) and code in str(caught.value)
    assert hint in str(caught.value)


async def test_an_inaccessible_image_is_refused_by_the_fake_as_by_aci(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    aci_fake.aci.inaccessible_images.add("nope/missing:1")
    with pytest.raises(PermanentProviderError, match=r"InaccessibleImage.*nope/missing:1"):
        await aci_provider.submit(spec_for(aci_fake, "run-img", 1, image="nope/missing:1"))


async def test_a_wrong_client_secret_fails_permanently_without_echoing_it(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    wrong = "definitely-not-the-secret-123"
    spec = spec_for(aci_fake, "run-auth", 1, credentials={
        "kind": "service_principal", "tenant_id": aci_fake.tenant,
        "client_id": aci_fake.client_id, "client_secret": wrong,
        "authority_host": aci_fake.base_url})
    with pytest.raises(PermanentProviderError) as caught:
        await aci_provider.submit(spec)
    assert "AADSTS7000215" in str(caught.value) and "client_secret" in str(caught.value)
    assert wrong not in str(caught.value) and aci_fake.client_secret not in str(caught.value)
    assert aci_fake.server.count("containerGroups.create", "containerGroups.get") == 0


async def test_a_missing_resource_group_names_the_field(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    with pytest.raises(PermanentProviderError, match="resource_group_name"):
        await aci_provider.submit(spec_for(aci_fake, "run-rg", 1,
                                           resource_group_name="no-such-rg"))


async def test_the_fake_checks_api_versions_like_arm(aci_fake: FakeAzure) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.identity.aio import ClientSecretCredential
    from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

    cred = ClientSecretCredential(aci_fake.tenant, aci_fake.client_id, aci_fake.client_secret,
                                  authority=aci_fake.base_url, connection_verify=aci_fake.ca_file)
    client = ContainerInstanceManagementClient(
        cred, aci_fake.subscription, base_url=aci_fake.base_url, api_version="2099-01-01",
        connection_verify=aci_fake.ca_file, retry_total=0,
        credential_scopes=["https://management.azure.com/.default"])
    try:
        with pytest.raises(HttpResponseError) as caught:
            await client.container_groups.get(RG, "x")
        assert caught.value.status_code == 400
        assert caught.value.error is not None
        assert caught.value.error.code == "NoRegisteredProviderFound"
        assert "2023-05-01" in str(caught.value)
    finally:
        await client.close()
        await cred.close()


def test_importing_the_adapter_does_not_import_the_sdk() -> None:
    code = ("import sys, providers.aci, providers.aci.events, providers.aci.status; "
            "print([m for m in sys.modules if m.startswith('azure')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.stdout.strip() == "[]"


async def test_a_listing_of_many_pages_is_followed_to_its_end(
        aci_fake: FakeAzure, aci_provider: AciProvider) -> None:
    aci_fake.aci.page_size = 3
    refs = [await aci_provider.submit(spec_for(aci_fake, f"run-p{i}", 1)) for i in range(7)]
    aci_fake.server.reset()
    statuses = await aci_provider.status_many(refs)
    assert len(statuses) == 7
    assert {s.phase for s in statuses.values()} == {InfraPhase.PENDING}
    assert aci_fake.server.count("containerGroups.list") == 3  # 3 + 3 + 1, by nextLink
    assert aci_fake.server.count("containerGroups.get") == 0
    aci_fake.aci.start(RG, str(refs[6].connection["group"]))  # on the last page
    statuses = await aci_provider.status_many(refs)
    assert statuses[refs[6].infra_id].phase is InfraPhase.RUNNING


class ConnectProxy:
    """An HTTP proxy on 127.0.0.1 that tunnels CONNECT requests and counts them."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        method, target, _ = (await reader.readline()).decode().split(" ", 2)
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if method != "CONNECT":
            writer.close()
            return
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.mark.parametrize("bypassed", [False, True])
async def test_the_environments_proxy_carries_arm_calls_unless_no_proxy_names_the_host(
        aci_fake: FakeAzure, monkeypatch: pytest.MonkeyPatch, bypassed: bool) -> None:
    # The transports are told not to read the environment per request (aiohttp would look
    # up the proxy and ~/.netrc on a thread for every call); the proxy is read once. ARM
    # is addressed as localhost here, the sign-in as 127.0.0.1 (azure-identity's own
    # transport reads the environment itself), so the tunnels tell the two apart.
    proxy = ConnectProxy()
    await proxy.start()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost" if bypassed else "example.invalid")
    monkeypatch.delenv("no_proxy", raising=False)
    provider = make_provider()
    try:
        arm = aci_fake.base_url.replace("127.0.0.1", "localhost")
        ref = await provider.submit(spec_for(aci_fake, "run-proxy", 1,
                                             resource_manager_endpoint=arm))
        assert (await provider.status(ref)).phase is InfraPhase.PENDING
    finally:
        await provider.close()
        await proxy.stop()
    through_proxy = [t for t in proxy.tunnels if t.startswith("localhost:")]
    if bypassed:
        assert through_proxy == []
    else:
        assert through_proxy, f"no ARM call went through the proxy: {proxy.tunnels}"
