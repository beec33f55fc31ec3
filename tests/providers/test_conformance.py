"""The provider conformance suite: what every adapter promises, run against every
(adapter, emulator) pair in ``tests/providers/conftest.py``.

Each test takes a fresh adapter instance where the contract says a call must work on its
own (a cloud function, a restarted server, another replica): nothing may depend on an
earlier call in the same process, only on the ``InfraRef`` the store keeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import uuid
from typing import Any

import jsonschema
import pytest

from dispatcher import templates
from providers.base import (
    InfraPhase,
    InfraRef,
    InfraStatus,
    PermanentProviderError,
    Provider,
    RetryableProviderError,
)
from tests.conftest import wait_for
from tests.providers.harness import Job, ProviderHarness

# Session fixtures the harnesses take (an emulator started once per test session).
pytest_plugins = ["tests.ecs_fixtures"]
FINAL_WAIT = 60.0


def stored(ref: InfraRef) -> InfraRef:
    """The reference as a later process reads it back from the store (through JSON)."""
    return InfraRef.from_json(json.loads(json.dumps(ref.to_json())))


async def final_status(harness: ProviderHarness, provider: Provider,
                       ref: InfraRef) -> InfraStatus:
    async def final() -> InfraStatus | None:
        await harness.advance(provider, ref)
        status = await provider.status(ref)
        return status if status.phase.is_final else None

    return await wait_for(final, timeout=FINAL_WAIT, interval=0.05,
                          what=f"{harness.name} job {ref.infra_id} to end")


def new_run() -> str:
    return f"conf-{uuid.uuid4().hex[:12]}"


async def test_default_template_is_json_schema_and_renders(harness: ProviderHarness) -> None:
    provider = harness.new_provider()
    template = provider.default_base_job_template()
    templates.validate_base_job_template(template)
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    defaults = templates.schema_defaults(template["variables"])
    rendered = templates.render_job_configuration(template["job_configuration"], defaults)
    assert isinstance(rendered, dict)
    for name in ("image", "command", "env", "cpu", "memory", "timeout"):
        assert name in template["variables"]["properties"], name


async def test_a_bad_value_is_refused_naming_the_field(harness: ProviderHarness) -> None:
    config, field = harness.bad_config()
    with pytest.raises(ValueError, match=field):
        harness.new_provider().validate_config(config)


async def test_a_job_reaches_its_final_state(harness: ProviderHarness) -> None:
    provider = harness.new_provider()
    good = await provider.submit(harness.job_spec(new_run(), 1, Job(exit_code=0)))
    bad = await provider.submit(harness.job_spec(new_run(), 1, Job(exit_code=3)))
    assert (await final_status(harness, provider, good)).phase is InfraPhase.SUCCEEDED
    failed = await final_status(harness, provider, bad)
    assert failed.phase is InfraPhase.FAILED and failed.exit_code == 3


async def test_a_retried_submit_returns_the_same_job(harness: ProviderHarness) -> None:
    run_id = new_run()
    spec = harness.job_spec(run_id, 1, Job(exit_code=None))
    first = await harness.new_provider().submit(spec)
    # As after a crash before recording: the dispatcher marks the call as a retry.
    again = await harness.new_provider().submit(dataclasses.replace(spec, retried=True))
    assert again.infra_id == first.infra_id
    assert await harness.count_jobs(run_id) == 1
    await harness.new_provider().cancel(stored(first), grace_seconds=1)


async def test_a_new_attempt_makes_a_new_job(harness: ProviderHarness) -> None:
    run_id = new_run()
    provider = harness.new_provider()
    first = await provider.submit(harness.job_spec(run_id, 1, Job(exit_code=0)))
    await final_status(harness, provider, first)
    second = await provider.submit(harness.job_spec(run_id, 2, Job(exit_code=0)))
    assert second.infra_id != first.infra_id
    assert await harness.count_jobs(run_id) == 2
    await final_status(harness, provider, second)


async def test_status_many_matches_status(harness: ProviderHarness) -> None:
    provider = harness.new_provider()
    refs = [await provider.submit(harness.job_spec(new_run(), 1, Job(exit_code=code)))
            for code in (0, 4, None)]
    for ref in refs[:2]:
        await final_status(harness, provider, ref)
    fresh = harness.new_provider()
    many = await fresh.status_many([stored(r) for r in refs])
    one = {r.infra_id: await fresh.status(stored(r)) for r in refs}
    assert set(many) == set(one) == {r.infra_id for r in refs}
    for infra_id, status in one.items():
        assert (many[infra_id].phase, many[infra_id].exit_code) == (status.phase,
                                                                    status.exit_code)
    await fresh.cancel(stored(refs[2]), grace_seconds=1)


async def test_native_states_map_as_documented(harness: ProviderHarness) -> None:
    cases = harness.mapping_cases()
    assert {c.expected for c in cases} >= {InfraPhase.SUCCEEDED, InfraPhase.FAILED,
                                           InfraPhase.CANCELLED}
    for case in cases:
        assert case.status.phase is case.expected, case.native


async def test_a_missing_job_is_missing(harness: ProviderHarness) -> None:
    status = await harness.new_provider().status(harness.missing_ref())
    assert status.phase is InfraPhase.MISSING and status.reason


async def test_cancel_stops_a_running_job_from_a_fresh_instance(
        harness: ProviderHarness) -> None:
    provider = harness.new_provider()
    ref = await provider.submit(harness.job_spec(new_run(), 1, Job(exit_code=None)))

    async def running() -> bool:
        await harness.advance(provider, ref)
        return (await provider.status(ref)).phase is InfraPhase.RUNNING

    await wait_for(running, timeout=FINAL_WAIT, interval=0.05, what="the job to run")
    other = harness.new_provider()  # another process: only the stored reference
    await other.cancel(stored(ref), grace_seconds=1)
    status = await final_status(harness, other, stored(ref))
    assert status.phase is InfraPhase.CANCELLED


async def test_a_run_submitted_by_another_process_is_followed_here(
        harness: ProviderHarness) -> None:
    """Status, logs and cancel from a fresh instance in this process, for a job another
    process submitted: all this one has is the reference, read back as the store does."""
    spec = harness.job_spec(new_run(), 1, Job(exit_code=None, lines=["from the other one"]))
    code = ("import asyncio, json, sys\n"
            "from providers.base import JobSpec\n"
            f"from {harness.package} import PROVIDER\n"
            "spec = JobSpec(**json.loads(sys.stdin.read()))\n"
            "print(json.dumps(asyncio.run(PROVIDER.submit(spec)).to_json()))")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                 stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate(json.dumps(dataclasses.asdict(spec)).encode())
    assert child.returncode == 0
    ref = InfraRef.from_json(json.loads(out.decode().strip().splitlines()[-1]))
    here = harness.new_provider()

    async def running_with_its_line() -> bool:
        await harness.advance(here, ref)
        if (await here.status(ref)).phase is not InfraPhase.RUNNING:
            return False
        return "from the other one" in [line.message for line in
                                        (await here.logs(ref, None)).lines]

    await wait_for(running_with_its_line, timeout=FINAL_WAIT, interval=0.05,
                   what="the other process's job to run and log")
    await here.cancel(ref, grace_seconds=1)
    assert (await final_status(harness, here, ref)).phase is InfraPhase.CANCELLED


async def test_logs_come_in_order_and_a_cursor_never_repeats(harness: ProviderHarness) -> None:
    lines = [f"line {i}" for i in range(12)]
    provider = harness.new_provider()
    ref = await provider.submit(harness.job_spec(new_run(), 1, Job(exit_code=0, lines=lines)))
    await final_status(harness, provider, ref)
    reader = harness.new_provider()
    seen: list[str] = []
    cursor: str | None = None

    async def all_read() -> bool:
        nonlocal cursor
        batch = await reader.logs(stored(ref), cursor)
        seen.extend(line.message for line in batch.lines)
        cursor = batch.cursor
        return len(seen) >= len(lines)

    await wait_for(all_read, timeout=FINAL_WAIT, interval=0.05, what="every log line")
    again = await reader.logs(stored(ref), cursor)
    assert seen == lines and again.lines == []


@pytest.mark.parametrize("kind", ["retryable", "permanent"])
async def test_emulator_faults_map_onto_the_two_errors(harness: ProviderHarness,
                                                       kind: Any) -> None:
    words = await harness.inject_submit_fault(kind)
    expected = RetryableProviderError if kind == "retryable" else PermanentProviderError
    with pytest.raises(expected) as caught:
        await harness.new_provider().submit(harness.job_spec(new_run(), 1, Job()))
    assert type(caught.value) is expected and words in str(caught.value)


async def test_importing_the_adapter_does_not_import_its_sdk(harness: ProviderHarness) -> None:
    # Only what the import adds: a namespace package's .pth (functions-framework's
    # google.cloud) makes an empty module at interpreter start.
    code = ("import sys\nbefore = set(sys.modules)\n"
            f"import {harness.package}\n"
            f"loaded = [m for m in {list(harness.sdk_modules)!r} "
            "if m in sys.modules and m not in before]\n"
            "print(','.join(loaded))")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                 stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    assert child.returncode == 0
    loaded = out.decode().strip()
    assert loaded == "", f"{harness.package} imported {loaded}"
