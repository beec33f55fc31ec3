"""The local process provider with real processes: states, logs, env, cancel, restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from providers.base import (
    InfraPhase,
    InfraRef,
    InfraStatus,
    JobSpec,
    LogLine,
    PermanentProviderError,
    Provider,
)
from providers.process import PROVIDER, ProcessProvider, job_env, runs_root
from providers.process import supervisor as sup
from providers.process.adapter import CRASH_AFTER_ENV, LAUNCH_STEPS

DEADLINE = 10.0


# ----------------------------------------------------------------------------- helpers


async def wait_for(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE}s waiting for {what}")
        await asyncio.sleep(0.02)


def spec(job_name: str, *command: str, env: dict[str, str] | None = None,
         config: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec(run_id=f"run-{job_name}", job_name=job_name, image=None,
                   command=list(command), env=env or {}, config=config or {})


def pid_alive(pid: int) -> bool:
    return sup.proc_start_time(pid) is not None


def supervisors_for(run_dir: str) -> list[int]:
    """Pids of live supervisor processes started for ``run_dir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if run_dir.encode() in argv and any(a.endswith(b"process/supervisor.py") for a in argv):
            if pid_alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


class Runs:
    """A provider plus the runs a test started, so teardown can stop stragglers."""

    def __init__(self, provider: ProcessProvider):
        self.provider = provider
        self.ids: list[str] = []

    async def submit(self, job: JobSpec) -> str:
        infra_id = (await self.provider.submit(job)).infra_id
        self.ids.append(infra_id)
        return infra_id

    async def final(self, infra_id: str, provider: ProcessProvider | None = None) -> InfraStatus:
        p = provider or self.provider

        async def check() -> InfraStatus | None:
            status = await p.status(InfraRef(infra_id))
            return status if status.phase.is_final else None
        result: InfraStatus = await wait_for(check, f"{infra_id} to finish")
        return result

    async def running(self, infra_id: str) -> None:
        async def check() -> bool:
            return (await self.provider.status(InfraRef(infra_id))).phase == InfraPhase.RUNNING
        await wait_for(check, f"{infra_id} to run")

    async def all_logs(self, infra_id: str) -> list[LogLine]:
        lines: list[LogLine] = []
        cursor = None
        while True:
            batch = await self.provider.logs(InfraRef(infra_id), cursor)
            lines += batch.lines
            if not batch.lines:
                return lines
            cursor = batch.cursor

    async def log_contains(self, infra_id: str, text: str) -> None:
        async def check() -> bool:
            return any(line.message == text for line in await self.all_logs(infra_id))
        await wait_for(check, f"{text!r} in the logs of {infra_id}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PUSHPOOL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PUSHPOOL_RUNS_DIR", raising=False)
    return tmp_path / "home"


@pytest.fixture
async def runs(home: Path) -> AsyncIterator[Runs]:
    provider = ProcessProvider()
    tracked = Runs(provider)
    yield tracked
    for infra_id in tracked.ids:  # never leave a test's job running
        if Path(infra_id).exists():
            await provider.cancel(InfraRef(infra_id), grace_seconds=0)
            await provider.cleanup(InfraRef(infra_id))
    await provider.close()


# ----------------------------------------------------------------------------- exit states


async def test_exit_zero_succeeds(runs: Runs) -> None:
    infra_id = await runs.submit(spec("ok", "true"))
    assert await runs.final(infra_id) == InfraStatus(InfraPhase.SUCCEEDED, 0)


async def test_nonzero_exit_fails_with_code_and_reason(runs: Runs) -> None:
    infra_id = await runs.submit(spec("three", "sh", "-c", "exit 3"))
    assert await runs.final(infra_id) == InfraStatus(InfraPhase.FAILED, 3, "exited with code 3")


async def test_job_killed_from_outside_is_crashed_naming_the_signal(runs: Runs) -> None:
    infra_id = await runs.submit(spec("killed", "sleep", "30"))
    await runs.running(infra_id)
    job_pid = runs.provider.process_ids(infra_id).job_pid
    assert job_pid is not None
    os.kill(job_pid, signal.SIGKILL)
    status = await runs.final(infra_id)
    assert status.phase == InfraPhase.CRASHED
    assert status.reason == "killed by signal SIGKILL"


async def test_command_not_found_is_permanent_and_leaves_nothing(runs: Runs, home: Path) -> None:
    with pytest.raises(PermanentProviderError, match="command not found: no-such-command-xyz"):
        await runs.submit(spec("nocmd", "no-such-command-xyz", "arg"))
    assert not (runs_root() / "nocmd").exists()


async def test_not_executable_file_is_command_not_found(runs: Runs, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(PermanentProviderError, match=f"command not found: {script}"):
        await runs.submit(spec("noexec", str(script)))


async def test_empty_command_is_permanent(runs: Runs) -> None:
    with pytest.raises(PermanentProviderError, match="command is empty"):
        await runs.submit(spec("empty"))


async def test_command_from_config_when_spec_has_none(runs: Runs) -> None:
    infra_id = await runs.submit(spec("cfgcmd", config={"command": ["sh", "-c", "exit 4"]}))
    assert (await runs.final(infra_id)).exit_code == 4


async def test_unknown_infra_id_is_missing(runs: Runs, tmp_path: Path) -> None:
    status = await runs.provider.status(InfraRef(str(tmp_path / "never-ran")))
    assert status.phase == InfraPhase.MISSING


async def test_status_many_answers_each_run(runs: Runs, tmp_path: Path) -> None:
    ok = await runs.submit(spec("many-ok", "true"))
    bad = await runs.submit(spec("many-bad", "false"))
    await runs.final(ok)
    await runs.final(bad)
    gone = str(tmp_path / "gone")
    result = await runs.provider.status_many([InfraRef(i) for i in (ok, bad, gone)])
    assert {k: v.phase for k, v in result.items()} == {
        ok: InfraPhase.SUCCEEDED, bad: InfraPhase.FAILED, gone: InfraPhase.MISSING}


# ----------------------------------------------------------------------------- cancel


async def test_cancel_stops_a_sleeping_job_with_sigterm(runs: Runs) -> None:
    infra_id = await runs.submit(spec("cancel-term", "sleep", "30"))
    await runs.running(infra_id)
    started = time.monotonic()
    await runs.provider.cancel(InfraRef(infra_id), grace_seconds=20)
    assert time.monotonic() - started < 10, "SIGTERM alone should have ended sleep"
    status = await runs.provider.status(InfraRef(infra_id))
    assert status.phase == InfraPhase.CANCELLED


async def test_cancel_escalates_to_sigkill_without_stalling_the_loop(runs: Runs) -> None:
    # The shell and its sleep both ignore SIGTERM (an ignored signal survives exec).
    infra_id = await runs.submit(
        spec("cancel-kill", "sh", "-c", "trap '' TERM; echo ready; sleep 30"))
    await runs.log_contains(infra_id, "ready")
    job_pid = runs.provider.process_ids(infra_id).job_pid
    assert job_pid is not None
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
    task = asyncio.create_task(ticker())
    grace = 0.5
    started = time.monotonic()
    await runs.provider.cancel(InfraRef(infra_id), grace_seconds=grace)
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed >= grace * 0.9, "the job ignored SIGTERM, so only SIGKILL could end it"
    assert ticks >= 10, "other coroutines must keep running during the grace period"
    assert (await runs.provider.status(InfraRef(infra_id))).phase == InfraPhase.CANCELLED
    assert not pid_alive(job_pid)


async def test_cancel_of_a_finished_run_changes_nothing(runs: Runs) -> None:
    infra_id = await runs.submit(spec("done-then-cancel", "true"))
    await runs.final(infra_id)
    await runs.provider.cancel(InfraRef(infra_id), grace_seconds=0)
    assert (await runs.provider.status(InfraRef(infra_id))).phase == InfraPhase.SUCCEEDED


# ----------------------------------------------------------------------------- logs


async def test_logs_capture_both_streams_in_order_and_resume(runs: Runs) -> None:
    script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf tail"
    infra_id = await runs.submit(spec("logs", "sh", "-c", script))
    await runs.final(infra_id)
    batch = await runs.provider.logs(InfraRef(infra_id), None)
    by_stream: dict[str, list[str]] = {}
    for line in batch.lines:
        by_stream.setdefault(line.stream, []).append(line.message)
        assert line.timestamp.tzinfo is not None
    assert by_stream == {"stdout": ["out1", "out2", "out3", "tail"],
                         "stderr": ["err1", "err2", "err3"]}
    again = await runs.provider.logs(InfraRef(infra_id), batch.cursor)
    assert again.lines == [] and again.cursor == batch.cursor


async def test_logs_are_batched_and_the_cursor_resumes(runs: Runs) -> None:
    infra_id = await runs.submit(spec("chatty", "seq", "1", "2500"))
    await runs.final(infra_id)
    sizes, messages, cursor = [], [], None
    while True:
        batch = await runs.provider.logs(InfraRef(infra_id), cursor)
        if not batch.lines:
            break
        sizes.append(len(batch.lines))
        messages += [line.message for line in batch.lines]
        cursor = batch.cursor
    assert sizes == [1000, 1000, 500]
    assert messages == [str(i) for i in range(1, 2501)]


async def test_logs_return_only_whole_lines(runs: Runs) -> None:
    infra_id = await runs.submit(spec("partial", "echo", "first"))
    await runs.final(infra_id)
    batch = await runs.provider.logs(InfraRef(infra_id), None)
    assert [line.message for line in batch.lines] == ["first"]
    # A writer caught half way through a line: the half must not be returned.
    line = json.dumps({"t": time.time(), "s": "stdout", "m": "second"}) + "\n"
    log_file = Path(infra_id) / sup.LOG_FILE
    with log_file.open("a") as f:
        f.write(line[:10])
    half = await runs.provider.logs(InfraRef(infra_id), batch.cursor)
    assert half.lines == [] and half.cursor == batch.cursor
    with log_file.open("a") as f:
        f.write(line[10:])
    whole = await runs.provider.logs(InfraRef(infra_id), half.cursor)
    assert [entry.message for entry in whole.lines] == ["second"]


async def test_stream_output_off_keeps_no_logs(runs: Runs) -> None:
    infra_id = await runs.submit(
        spec("quiet", "echo", "hidden", config={"stream_output": False}))
    assert (await runs.final(infra_id)).phase == InfraPhase.SUCCEEDED
    assert (await runs.provider.logs(InfraRef(infra_id), None)).lines == []


# ----------------------------------------------------------------------------- env and dirs


async def test_env_is_minimal_plus_spec_env(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_SECRET", "hunter2")
    infra_id = await runs.submit(spec("env", "env", env={"GREETING": "hello"}))
    await runs.final(infra_id)
    lines = [line.message for line in await runs.all_logs(infra_id)]
    names = {line.split("=", 1)[0] for line in lines}
    assert "GREETING=hello" in lines
    assert not any("hunter2" in line for line in lines)
    assert names <= {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "GREETING"}


def test_job_env_layers_config_then_spec_and_none_unsets() -> None:
    parent = {"PATH": "/bin", "HOME": "/h", "LANG": "C", "AWS_SECRET_ACCESS_KEY": "x"}
    env = job_env({"A": "spec"}, {"A": "config", "B": "config", "LANG": None}, parent)
    assert env == {"PATH": "/bin", "HOME": "/h", "A": "spec", "B": "config"}


async def test_each_run_gets_a_fresh_working_directory(runs: Runs, home: Path) -> None:
    script = "pwd; ls -A; touch left-behind"
    first = await runs.submit(spec("fresh-1", "sh", "-c", script))
    second = await runs.submit(spec("fresh-2", "sh", "-c", script))
    outputs = []
    for infra_id in (first, second):
        await runs.final(infra_id)
        outputs.append([line.message for line in await runs.all_logs(infra_id)])
    cwd1, cwd2 = outputs[0][0], outputs[1][0]
    assert outputs[0][1:] == [] and outputs[1][1:] == []  # nothing in the directory
    assert cwd1 != cwd2
    assert Path(cwd1).is_relative_to(home / "runs") and "fresh-1" in cwd1


async def test_working_dir_config_is_the_parent_of_run_dirs(runs: Runs, tmp_path: Path) -> None:
    parent = tmp_path / "elsewhere"
    infra_id = await runs.submit(spec("placed", "pwd", config={"working_dir": str(parent)}))
    await runs.final(infra_id)
    cwd = (await runs.all_logs(infra_id))[0].message
    assert Path(cwd).is_relative_to(parent)


def test_runs_root_prefers_runs_dir_then_home(home: Path, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    assert runs_root() == home / "runs"
    monkeypatch.setenv("PUSHPOOL_RUNS_DIR", str(tmp_path / "r"))
    assert runs_root() == tmp_path / "r"


# ----------------------------------------------------------------------------- restarts


def ignored_signals(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError("no SigIgn line")


async def test_job_gets_default_signal_handling(runs: Runs) -> None:
    infra_id = await runs.submit(spec("signals", "sleep", "30"))
    await runs.running(infra_id)
    job_pid = runs.provider.process_ids(infra_id).job_pid
    assert job_pid is not None
    ignored = ignored_signals(job_pid)
    assert not ignored & {signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE}


async def test_submit_is_idempotent_on_the_job_name(runs: Runs) -> None:
    job = spec("once", "sleep", "30")
    first, second = await asyncio.gather(runs.submit(job), runs.submit(job))
    third = (await ProcessProvider().submit(job)).infra_id  # as after a dispatcher crash
    assert first == second == third
    assert len(supervisors_for(first)) == 1


async def test_a_new_provider_instance_reads_and_cancels_an_old_run(runs: Runs) -> None:
    infra_id = await runs.submit(spec("reattach", "sh", "-c", "echo hello; sleep 30"))
    await runs.log_contains(infra_id, "hello")
    fresh = ProcessProvider()
    assert (await fresh.status(InfraRef(infra_id))).phase == InfraPhase.RUNNING
    logged = (await fresh.logs(InfraRef(infra_id), None)).lines
    assert [line.message for line in logged] == ["hello"]
    await fresh.cancel(InfraRef(infra_id), grace_seconds=5)
    assert (await runs.final(infra_id, fresh)).phase == InfraPhase.CANCELLED


DISPATCHER = """
import asyncio, signal, sys
from providers.base import JobSpec
from providers.process import PROVIDER

# As in an interactive shell, whatever the test runner's parent did with SIGINT.
signal.signal(signal.SIGINT, signal.default_int_handler)

async def main():
    spec = JobSpec(run_id="r", job_name="survivor", image=None, env={"GO": sys.argv[1]},
                   command=["sh", "-c", 'while [ ! -e "$GO" ]; do sleep 0.05; done; echo done'])
    print((await PROVIDER.submit(spec)).infra_id, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_job_survives_ctrl_c_of_the_dispatcher(runs: Runs, tmp_path: Path) -> None:
    go = tmp_path / "go"
    dispatcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DISPATCHER, str(go), stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent, start_new_session=True)
    try:
        assert dispatcher.stdout is not None
        line = await asyncio.wait_for(dispatcher.stdout.readline(), DEADLINE)
        infra_id = line.decode().strip()
        runs.ids.append(infra_id)
        await runs.running(infra_id)
        ids = runs.provider.process_ids(infra_id)
        assert ids.supervisor_pid is not None and ids.job_pid is not None
        assert os.getsid(ids.supervisor_pid) != os.getsid(dispatcher.pid)  # own session
        assert os.getpgid(ids.job_pid) not in (os.getpgid(dispatcher.pid), ids.supervisor_pid)
        os.killpg(dispatcher.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert await asyncio.wait_for(dispatcher.wait(), DEADLINE) != 0
    finally:
        if dispatcher.returncode is None:
            dispatcher.kill()
            await dispatcher.wait()
    assert (await runs.provider.status(InfraRef(infra_id))).phase == InfraPhase.RUNNING
    go.touch()
    assert (await runs.final(infra_id)).phase == InfraPhase.SUCCEEDED
    assert [line.message for line in await runs.all_logs(infra_id)] == ["done"]


# A submitter that dies mid-launch: the fault-injection point kills it after each step.
CUT_SHORT_SUBMIT = """
import asyncio, json, sys
from providers.base import JobSpec
from providers.process import PROVIDER

asyncio.run(PROVIDER.submit(JobSpec(**json.loads(sys.argv[1]))))
"""


def counting_job(job_name: str, ledger: Path) -> JobSpec:
    """A job that appends one line to ``ledger`` each time it runs."""
    return spec(job_name, "sh", "-c", 'echo ran >> "$LEDGER"', env={"LEDGER": str(ledger)})


@pytest.mark.parametrize("step", LAUNCH_STEPS)
async def test_a_launch_cut_short_at_any_step_runs_the_job_once_on_resubmit(
        runs: Runs, tmp_path: Path, step: str) -> None:
    ledger = tmp_path / "ledger"
    job = counting_job(f"cut-{step.replace('_', '-')}", ledger)
    submitter = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CUT_SHORT_SUBMIT, json.dumps(dataclasses.asdict(job)),
        env={**os.environ, CRASH_AFTER_ENV: step}, cwd=Path(__file__).parent.parent)
    assert await asyncio.wait_for(submitter.wait(), DEADLINE) == -signal.SIGKILL
    infra_id = await runs.submit(job)  # the retry of a dispatcher that came back
    assert await runs.final(infra_id) == InfraStatus(InfraPhase.SUCCEEDED, 0)
    await runs.submit(job)  # and once more, after the job ended: nothing runs again
    assert ledger.read_text() == "ran\n"
    assert not (Path(infra_id) / sup.PAYLOAD_FILE).exists()  # the env is off the disk

    async def supervisors_gone() -> bool:  # a superseded one, if any, gave up at once
        return not supervisors_for(infra_id)
    await wait_for(supervisors_gone, "every supervisor of the run to exit")


async def test_a_supervisor_of_a_superseded_launch_does_nothing(runs: Runs,
                                                                tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    infra_id = await runs.submit(counting_job("superseded", ledger))
    await runs.final(infra_id)
    run_dir = Path(infra_id)
    before = sorted(p.name for p in run_dir.iterdir())
    for launch_id in ("an-older-launch", json.loads((run_dir / sup.LAUNCH_FILE).read_text())
                      ["launch_id"]):  # another launch's, and this one's, already taken
        late = await asyncio.create_subprocess_exec(
            sys.executable, "-I", sup.__file__, infra_id, launch_id,
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(late.communicate(), DEADLINE)
        assert late.returncode == 0 and b"nothing to do" in err
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert ledger.read_text() == "ran\n"


async def test_run_files_are_private_to_their_owner(runs: Runs) -> None:
    infra_id = await runs.submit(spec("private", "sleep", "30", env={"TOKEN": "s3cret"}))
    await runs.running(infra_id)
    for path in Path(infra_id).iterdir():
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path.name
    assert Path(infra_id).stat().st_mode & 0o077 == 0


async def test_killed_supervisor_means_crashed_and_cleanup_ends_the_job(runs: Runs) -> None:
    infra_id = await runs.submit(spec("orphan", "sleep", "30"))
    await runs.running(infra_id)
    ids = runs.provider.process_ids(infra_id)
    assert ids.supervisor_pid is not None and ids.job_pid is not None
    os.kill(ids.supervisor_pid, signal.SIGKILL)
    status = await runs.final(infra_id)
    assert status.phase == InfraPhase.CRASHED
    assert status.reason is not None and "supervisor" in status.reason
    await runs.provider.cleanup(InfraRef(infra_id))
    assert not Path(infra_id).exists()

    async def job_gone() -> bool:
        return not pid_alive(ids.job_pid)  # type: ignore[arg-type]
    await wait_for(job_gone, "the unsupervised job to be killed by cleanup")


async def test_reused_supervisor_pid_is_not_running(runs: Runs) -> None:
    infra_id = await runs.submit(spec("reused", "true"))
    await runs.final(infra_id)
    run_dir = Path(infra_id)
    (run_dir / sup.EXIT_FILE).unlink()  # as if the supervisor died before recording
    start = sup.proc_start_time(os.getpid())
    assert start is not None
    me = {"pid": os.getpid(), "start": start}
    sup.write_json_atomic(str(run_dir / sup.SUPERVISOR_FILE), me)
    alive = await runs.provider.status(InfraRef(infra_id))
    assert alive.phase == InfraPhase.RUNNING  # pid is alive
    sup.write_json_atomic(str(run_dir / sup.SUPERVISOR_FILE), {**me, "start": start - 1})
    status = await runs.provider.status(InfraRef(infra_id))
    assert status.phase == InfraPhase.CRASHED and "reused" in (status.reason or "")


async def test_close_leaves_running_jobs_alone(runs: Runs) -> None:
    infra_id = await runs.submit(spec("outlives", "sleep", "30"))
    await runs.running(infra_id)
    await runs.provider.close()
    job_pid = runs.provider.process_ids(infra_id).job_pid
    assert job_pid is not None and pid_alive(job_pid)
    assert (await ProcessProvider().status(InfraRef(infra_id))).phase == InfraPhase.RUNNING


async def test_cleanup_keeps_a_running_run_and_removes_a_final_one(runs: Runs) -> None:
    infra_id = await runs.submit(spec("cleanme", "sleep", "30"))
    await runs.running(infra_id)
    await runs.provider.cleanup(InfraRef(infra_id))
    assert Path(infra_id).exists()
    await runs.provider.cancel(InfraRef(infra_id), grace_seconds=5)
    await runs.provider.cleanup(InfraRef(infra_id))
    assert not Path(infra_id).exists()


# ----------------------------------------------------------------------------- pools


def test_module_exposes_a_provider() -> None:
    assert isinstance(PROVIDER, Provider)
    assert PROVIDER.pool_type == "process"


def test_default_template_has_the_common_and_process_variables() -> None:
    template = PROVIDER.default_base_job_template()
    assert template["job_configuration"]["command"] == "{{ command }}"
    assert set(template["job_configuration"]) == {
        "command", "env", "working_dir", "timeout", "stream_output", "labels"}
    properties = template["variables"]["properties"]
    assert {"image", "command", "env", "cpu", "memory", "timeout", "labels",
            "working_dir", "stream_output"} <= set(properties)
    assert properties["stream_output"]["default"] is True


def test_validate_config_names_the_bad_field() -> None:
    PROVIDER.validate_config({"command": ["echo"], "timeout": 5, "env": {"A": None}})
    with pytest.raises(ValueError, match="timeout"):
        PROVIDER.validate_config({"timeout": "soon"})
    with pytest.raises(ValueError, match="image"):
        PROVIDER.validate_config({"image": "python:3.12"})


async def test_provisioning_has_nothing_to_create() -> None:
    plan = await PROVIDER.provision("pool", {}, apply=True)
    assert plan.target == "this host" and plan.steps == [] and plan.changes == 0
    assert (await PROVIDER.deprovision("pool", {}, apply=True)).steps == []
