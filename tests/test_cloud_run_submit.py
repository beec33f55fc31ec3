"""cloud-run:push submit: one job per deployment and template, one execution per run
attempt, adoption of an execution a lost answer left behind, retired jobs, the run_job
token bucket and the error mapping."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import pytest

from providers.base import PermanentProviderError, RetryableProviderError
from providers.cloud_run import CloudRunProvider
from providers.cloud_run.jobs import DEPLOYMENT_LABEL, RETIRED_LABEL, TEMPLATE_LABEL
from providers.ratelimit import AdaptiveTokenBucket
from tests.fakes.cloud_run import FakeGoogle, shared_fake
from tests.providers.cloud_run_harness import make_provider, spec_for


@pytest.fixture
def fake() -> FakeGoogle:
    made = shared_fake()
    made.reset()
    return made


@pytest.fixture
async def provider(fake: FakeGoogle) -> AsyncIterator[CloudRunProvider]:
    made = make_provider(max_workers=16)
    yield made
    await made.close()


async def test_500_runs_of_one_deployment_make_one_job(fake: FakeGoogle,
                                                       provider: CloudRunProvider) -> None:
    refs = await asyncio.gather(*(provider.submit(spec_for(fake, f"many-{i}"))
                                  for i in range(500)))
    assert len({r.infra_id for r in refs}) == 500
    assert len(fake.run.jobs) == 1
    assert len(fake.run.executions) == 500
    assert fake.server.calls["jobs.create"] == 1
    job = next(iter(fake.run.jobs.values()))
    assert job["labels"][DEPLOYMENT_LABEL] == "dep-1"
    assert "pushpool-run-id" not in job["labels"]  # per-run labels stay off the job
    execution = fake.run.executions[refs[7].infra_id]
    env = {e["name"]: e["value"] for e in execution["template"]["containers"][0]["env"]}
    assert env["PUSHPOOL_RUN_ID"] == "many-7" and env["PUSHPOOL_RUN_ATTEMPT"] == "1"
    assert execution["template"]["containers"][0]["args"] == ["-c", "print('hi')"]
    assert job["template"]["template"]["containers"][0]["command"] == ["python"]


async def test_the_run_overrides_carry_env_timeout_and_args(fake: FakeGoogle,
                                                            provider: CloudRunProvider) -> None:
    spec = dataclasses.replace(spec_for(fake, "ov-1", cpu="2", memory="1Gi", task_count=2),
                               timeout=120)
    ref = await provider.submit(spec)
    request = [body for op, _, body in fake.server.requests if op == "jobs.run"][-1]
    overrides = request["overrides"]
    assert overrides["timeout"] == "120s" and overrides["taskCount"] == 2
    names = {e["name"] for e in overrides["containerOverrides"][0]["env"]}
    assert {"PUSHPOOL_RUN_ID", "PUSHPOOL_RUN_TOKEN", "PUSHPOOL_RUN_ATTEMPT"} <= names
    job = fake.run.jobs[ref.infra_id.split("/executions/")[0]]
    limits = job["template"]["template"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": "1Gi"}
    assert ref.console_url and "/executions/details/us-central1/" in ref.console_url


async def test_a_retried_submit_adopts_the_execution_of_a_lost_answer(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    spec = spec_for(fake, "lost-1")
    first = await provider.submit(spec)
    assert fake.server.calls["executions.list"] == 0  # a first call looks for nothing
    # The dispatcher crashed before recording ``first``: another process tries again.
    other = make_provider()
    try:
        again = await other.submit(dataclasses.replace(spec, retried=True))
    finally:
        await other.close()
    assert again.infra_id == first.infra_id
    assert fake.server.calls["jobs.run"] == 1
    # A new attempt of the same run is a new execution of the same job.
    second = await provider.submit(spec_for(fake, "lost-1", attempt=2))
    assert second.infra_id != first.infra_id and fake.server.calls["jobs.run"] == 2
    assert len(fake.run.jobs) == 1


async def test_adoption_looks_past_the_first_page(fake: FakeGoogle) -> None:
    provider = make_provider(adopt_page_size=5)
    try:
        early = await provider.submit(spec_for(fake, "paged-0"))
        await asyncio.gather(*(provider.submit(spec_for(fake, f"paged-{i}"))
                               for i in range(1, 9)))
        again = await provider.submit(dataclasses.replace(spec_for(fake, "paged-0"),
                                                          retried=True))
        assert again.infra_id == early.infra_id
        assert fake.server.calls["jobs.run"] == 9
    finally:
        await provider.close()


async def test_a_template_change_makes_a_new_job_and_retires_the_old(
        fake: FakeGoogle) -> None:
    provider = make_provider(retired_grace_seconds=0.0, sweep_interval=0.0)
    try:
        old_ref = await provider.submit(spec_for(fake, "tpl-1"))
        old_job = old_ref.infra_id.split("/executions/")[0]
        new_ref = await provider.submit(spec_for(fake, "tpl-2", memory="1Gi"))
        new_job = new_ref.infra_id.split("/executions/")[0]
        assert new_job != old_job and len(fake.run.jobs) == 2
        assert RETIRED_LABEL in fake.run.jobs[old_job]["labels"]
        assert RETIRED_LABEL not in fake.run.jobs[new_job]["labels"]
        assert fake.run.jobs[new_job]["labels"][TEMPLATE_LABEL] != \
            fake.run.jobs[old_job]["labels"][TEMPLATE_LABEL]
        # Its execution still runs: cleanup keeps the old job.
        fake.run.start(old_ref.infra_id)
        await provider.cleanup(new_ref)
        assert old_job in fake.run.jobs
        fake.run.succeed(old_ref.infra_id)
        await provider.cleanup(old_ref)
        assert old_job not in fake.run.jobs and new_job in fake.run.jobs
        # Another deployment's jobs are never touched.
        other = await provider.submit(spec_for(fake, "tpl-3", deployment_id="dep-2"))
        assert RETIRED_LABEL not in fake.run.jobs[new_job]["labels"]
        assert other.infra_id.split("/executions/")[0] in fake.run.jobs
    finally:
        await provider.close()


async def test_going_back_to_an_old_template_brings_its_job_back(fake: FakeGoogle) -> None:
    provider = make_provider()
    try:
        first = await provider.submit(spec_for(fake, "back-1"))
        await provider.submit(spec_for(fake, "back-2", memory="1Gi"))
        fresh = make_provider()  # no memory of the jobs it saw
        again = await fresh.submit(spec_for(fake, "back-3"))
        await fresh.close()
        job = first.infra_id.split("/executions/")[0]
        assert again.infra_id.startswith(job + "/")
        assert RETIRED_LABEL not in fake.run.jobs[job]["labels"]
        assert len(fake.run.jobs) == 2 and fake.server.calls["jobs.create"] == 2
    finally:
        await provider.close()


async def test_keep_job_keeps_retired_jobs(fake: FakeGoogle) -> None:
    provider = make_provider(retired_grace_seconds=0.0, sweep_interval=0.0)
    try:
        old = await provider.submit(spec_for(fake, "keep-1", keep_job=True))
        fake.run.succeed(old.infra_id)
        await provider.submit(spec_for(fake, "keep-2", keep_job=True, memory="1Gi"))
        await provider.cleanup(old)
        assert len(fake.run.jobs) == 2
    finally:
        await provider.close()


async def test_a_job_deleted_by_hand_is_made_again(fake: FakeGoogle,
                                                   provider: CloudRunProvider) -> None:
    await provider.submit(spec_for(fake, "gone-1"))
    fake.run.jobs.clear()
    ref = await provider.submit(spec_for(fake, "gone-2"))
    assert ref.infra_id in fake.run.executions and fake.server.calls["jobs.create"] == 2


# ---------------------------------------------------------------------------- throttling


async def test_a_429_is_retryable_throttled_and_shrinks_the_bucket(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    await provider.submit(spec_for(fake, "thr-0"))  # the job exists
    fake.server.fail_next("jobs.run", 429, "Quota exceeded for quota metric 'Job run requests'.")
    with pytest.raises(RetryableProviderError) as caught:
        await provider.submit(spec_for(fake, "thr-1"))
    assert caught.value.throttled and "Job run requests" in str(caught.value)
    ref = await provider.submit(spec_for(fake, "thr-1"))  # the dispatcher's retry
    assert ref.infra_id in fake.run.executions
    bucket = next(iter(provider._buckets.values()))
    assert bucket.throttles == 1 and bucket.rate < bucket.max_rate


async def test_the_bucket_keeps_run_job_under_the_quota(fake: FakeGoogle) -> None:
    provider = make_provider(run_job_rate=1.0, run_job_burst=3.0, max_run_wait=0.0)
    try:
        for i in range(3):
            await provider.submit(spec_for(fake, f"burst-{i}"))
        with pytest.raises(RetryableProviderError) as caught:
            await provider.submit(spec_for(fake, "burst-3"))
        assert caught.value.throttled and caught.value.retry_after
        assert fake.server.calls["jobs.run"] == 3  # the refused one never reached Google
    finally:
        await provider.close()


async def test_bucket_waits_in_order_and_recovers() -> None:
    now = [0.0]
    bucket = AdaptiveTokenBucket(2.0, 2.0, recovery=1.0, clock=lambda: now[0])
    assert bucket.wait_time() == 0.0
    await bucket.acquire()
    await bucket.acquire()
    assert bucket.wait_time() == pytest.approx(0.5)
    bucket.on_throttle()
    bucket.on_throttle()  # within the cooldown: counted once
    assert bucket.rate == 1.0 and bucket.throttles == 2
    now[0] += 5.0
    for _ in range(10):
        bucket.on_success()
    assert bucket.rate == 2.0
    with pytest.raises(ValueError):
        AdaptiveTokenBucket(0, 1)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("code", "message", "kind"), [
    (503, "The service is currently unavailable.", RetryableProviderError),
    (504, "Deadline exceeded.", RetryableProviderError),
    (500, "Internal error.", RetryableProviderError),
    (403, "Permission 'run.jobs.run' denied on resource.", PermanentProviderError),
    (400, "Invalid value for field 'overrides.timeout'.", PermanentProviderError),
])
async def test_run_job_errors_map_onto_the_two_errors(fake: FakeGoogle,
                                                      provider: CloudRunProvider, code: int,
                                                      message: str, kind: type) -> None:
    fake.server.fail_next("jobs.run", code, message)
    with pytest.raises(kind) as caught:
        await provider.submit(spec_for(fake, f"err-{code}"))
    assert type(caught.value) is kind and message in str(caught.value)


async def test_an_image_google_cannot_find_is_permanent(fake: FakeGoogle,
                                                        provider: CloudRunProvider) -> None:
    spec = spec_for(fake, "img-1", image="gcr.io/nope/does-not-exist:1")
    with pytest.raises(PermanentProviderError) as caught:
        await provider.submit(spec)
    assert "Image 'gcr.io/nope/does-not-exist:1' not found" in str(caught.value)


async def test_a_permission_error_creating_the_job_says_what_to_grant(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    fake.server.fail_next("jobs.create", 403, "Permission 'run.jobs.create' denied.")
    with pytest.raises(PermanentProviderError) as caught:
        await provider.submit(spec_for(fake, "perm-1"))
    assert "run.jobs.create" in str(caught.value) and "roles/run.developer" in str(caught.value)


async def test_a_transient_error_reading_the_job_is_retried_once(
        fake: FakeGoogle, provider: CloudRunProvider) -> None:
    fake.server.fail_next("jobs.get", 503, "try again")
    ref = await provider.submit(spec_for(fake, "read-1"))
    assert ref.infra_id in fake.run.executions and fake.server.calls["jobs.get"] == 2


async def test_the_reference_holds_no_secret_in_its_repr(fake: FakeGoogle,
                                                         provider: CloudRunProvider) -> None:
    ref = await provider.submit(spec_for(fake, "repr-1"))
    assert "tok-secret" not in repr(ref)
    facts = json.loads(json.dumps(ref.to_json()))["connection"]
    assert facts["project"] == fake.project and facts["endpoint"] == fake.url
