"""Local process provider (pool type ``process``): the embedded default.

Each run gets a run directory ``<root>/<job_name>/`` whose absolute path is the infra id.
A supervisor (``providers.process.supervisor``) started in its own session owns the job,
so the job survives a dispatcher restart; the supervisor and this module talk only through
files in the run directory, which is why ``status`` works from a fresh process:

    payload.json     written here first: argv, env, cwd and a launch id (owner-only; the
                     supervisor removes it once the job runs)
    launch.json      written here next, and again with the supervisor's pid once spawned
    supervisor.lock  held by the supervisor that owns the run, for its whole life
    supervisor.json  the supervisor's pid, start time and launch id: the run is taken
    job.json         the job's pid (also its process group) and start time
    logs.jsonl       one JSON object per output line
    cancel.json      a cancel request (grace period)
    exit.json        exit code or signal, cancelled or not; present once the run is final
    work/            the job's fresh working directory

A launch survives the dispatcher dying at any point of it: every step is a file renamed
into place, and a resubmit launches again (with a new launch id, which retires any
supervisor still starting for the old one) unless a supervisor has taken the run
(``supervisor.json``) or is alive to take it. Only a supervisor that took the run can have
started the job, so a job runs at most once, and a run whose launch was cut short runs once
its submit is retried. ``PUSHPOOL_PROCESS_CRASH_AFTER=<step>`` (one of ``LAUNCH_STEPS``) is
the fault-injection point the crash-safety tests use: the process SIGKILLs itself right
after that step.

The job's environment is a minimal base (PATH, HOME, LANG, LC_ALL, TMPDIR when set) with the
configuration's and the spec's env laid over it: nothing else of the dispatcher's own
environment (its secrets) reaches the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from providers.base import (
    COMMON_VARIABLES,
    InfraPhase,
    InfraRef,
    InfraStatus,
    JobSpec,
    LogBatch,
    LogLine,
    PermanentProviderError,
    ProviderConfig,
    ProvisionPlan,
    RetryableProviderError,
)
from providers.process import supervisor as sup

BASE_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
MAX_LOG_LINES = 1000  # per batch, so a chatty job cannot blow the dispatcher's memory
MAX_LOG_BYTES = 1024 * 1024  # per batch; a stored line is always shorter than this
SUPERVISOR_START_DEADLINE = 15.0  # seconds a run may stay without a supervisor record
LOCK_FILE = ".submit.lock"
CRASH_AFTER_ENV = "PUSHPOOL_PROCESS_CRASH_AFTER"
LAUNCH_STEPS = ("run_dir", "payload", "launch", "spawn", "supervisor_pid")
PAYLOAD_IN_THREAD_BYTES = 256 * 1024  # a larger payload is written off the event loop
_POLL_FIRST, _POLL_MAX = 0.02, 0.25  # cancel's wait for the exit record, in seconds

# Supervisors this process started, polled so finished ones do not stay zombies. Module
# level, not per instance: a dropped provider must not leave Popen objects to warn.
_SPAWNED: list[subprocess.Popen[bytes]] = []


class ProcessConfig(ProviderConfig):
    """The rendered job configuration of a ``process`` pool."""

    command: list[str] | None = None
    env: dict[str, str | None] = {}
    working_dir: str | None = None  # parent of the per-run directories
    timeout: int | None = None  # enforced by the dispatcher's watcher, not here
    stream_output: bool = True  # False: the job's output is discarded, logs stay empty
    labels: dict[str, str] = {}


@dataclass(frozen=True)
class ProcessIds:
    """The pids behind a run, for diagnostics and tests; None where not (yet) known."""

    supervisor_pid: int | None
    job_pid: int | None


# --------------------------------------------------------------------- paths and env


def runs_root(config: ProcessConfig | None = None) -> Path:
    """Where run directories go: config.working_dir, $PUSHPOOL_RUNS_DIR,
    $PUSHPOOL_HOME/runs, ~/.pushpool/runs (first set wins)."""
    for value in (config.working_dir if config else None,
                  os.environ.get("PUSHPOOL_RUNS_DIR")):
        if value:
            return Path(value).expanduser().absolute()
    home = os.environ.get("PUSHPOOL_HOME") or "~/.pushpool"
    return (Path(home).expanduser() / "runs").absolute()


def run_dir_name(job_name: str) -> str:
    """The job name as one safe path component (job names are DNS-safe already)."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in job_name).strip(".")
    if not name:
        raise PermanentProviderError(f"job name {job_name!r} cannot name a run directory")
    return name


def job_env(spec_env: Mapping[str, str], config_env: Mapping[str, str | None],
            parent_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Minimal base env, then the configuration's env (None unsets), then the spec's env."""
    parent = os.environ if parent_env is None else parent_env
    env = {name: parent[name] for name in BASE_ENV_NAMES if parent.get(name)}
    env.setdefault("PATH", os.defpath)
    for name, value in config_env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.update(spec_env)
    return env


def check_command(argv0: str, env: Mapping[str, str], cwd: Path) -> None:
    """Raise ``PermanentProviderError("command not found: X")`` unless argv0 can run."""
    if os.sep in argv0:
        path = Path(argv0) if os.path.isabs(argv0) else cwd / argv0
        if not path.is_file():
            raise PermanentProviderError(f"command not found: {argv0}")
        if not os.access(path, os.X_OK):
            raise PermanentProviderError(
                f"command not found: {argv0} (the file exists but is not executable)")
    elif shutil.which(argv0, path=env.get("PATH", os.defpath)) is None:
        raise PermanentProviderError(
            f"command not found: {argv0} (not on the job's PATH; use an absolute path "
            "or set PATH in the pool's env)")


def _run_dir(infra_id: str) -> Path:
    path = Path(infra_id)
    if not path.is_absolute():
        raise PermanentProviderError(
            f"not a process-provider infra id (expected an absolute run directory): {infra_id}")
    return path


def _read(run_dir: Path, name: str) -> dict[str, Any] | None:
    return sup.read_json(str(run_dir / name))


def _alive(record: dict[str, Any] | None) -> bool:
    """Is the process in a pid record still the same process (pid not reused)?"""
    if not record or not isinstance(record.get("pid"), int):
        return False
    start = sup.proc_start_time(record["pid"])
    recorded = record.get("start")
    return start is not None and (recorded is None or start == 0 or start == recorded)


def _supervisor_record(run_dir: Path, launch: dict[str, Any]) -> dict[str, Any] | None:
    own = _read(run_dir, sup.SUPERVISOR_FILE)
    if own:
        return own
    if launch.get("supervisor_pid"):
        return {"pid": launch["supervisor_pid"], "start": launch.get("supervisor_start")}
    return None


# --------------------------------------------------------------------- status


def status_from_exit(record: dict[str, Any]) -> InfraStatus:
    code = record.get("exit_code")
    if record.get("error"):
        return InfraStatus(InfraPhase.FAILED, code, str(record["error"]))
    if record.get("cancelled"):
        return InfraStatus(InfraPhase.CANCELLED, code, "cancelled")
    if record.get("signal") is not None:
        name = record.get("signal_name") or sup.signal_name(int(record["signal"]))
        return InfraStatus(InfraPhase.CRASHED, None, f"killed by signal {name}")
    if code == 0:
        return InfraStatus(InfraPhase.SUCCEEDED, 0)
    return InfraStatus(InfraPhase.FAILED, code, f"exited with code {code}")


def read_status(run_dir: Path, now: float | None = None) -> InfraStatus:
    """The run's state from its files alone (no memory of who started it)."""
    launch = _read(run_dir, sup.LAUNCH_FILE)
    if launch is None:
        return InfraStatus(InfraPhase.MISSING, reason=f"no run directory at {run_dir}")
    final = _read(run_dir, sup.EXIT_FILE)
    if final:
        return status_from_exit(final)
    supervisor = _supervisor_record(run_dir, launch)
    job = _read(run_dir, sup.JOB_FILE)
    if _alive(supervisor):
        return InfraStatus(InfraPhase.RUNNING if job else InfraPhase.PENDING)
    # The supervisor may have written its exit record between our two reads.
    final = _read(run_dir, sup.EXIT_FILE)
    if final:
        return status_from_exit(final)
    if supervisor is None:
        age = (time.time() if now is None else now) - float(launch.get("created_at", 0))
        if age < SUPERVISOR_START_DEADLINE:
            return InfraStatus(InfraPhase.PENDING)
        return InfraStatus(InfraPhase.CRASHED, reason=(
            f"the supervisor never started (see {run_dir / sup.SUPERVISOR_LOG})"))
    if _read(run_dir, sup.CANCEL_FILE) and not _alive(job):
        return InfraStatus(InfraPhase.CANCELLED, reason="cancelled (supervisor gone, job gone)")
    job_state = ("the job is still running unsupervised" if _alive(job)
                 else "the job is gone")
    return InfraStatus(InfraPhase.CRASHED, reason=(
        f"the supervisor (pid {supervisor.get('pid')}) is gone or its pid was reused, "
        f"without an exit record; {job_state} (see {run_dir / sup.SUPERVISOR_LOG})"))


# --------------------------------------------------------------------- logs


def read_logs(run_dir: Path, cursor: str | None, max_lines: int = MAX_LOG_LINES) -> LogBatch:
    """Whole lines after byte offset ``cursor``; a partly written last line waits."""
    try:
        offset = int(cursor) if cursor else 0
    except ValueError:
        raise PermanentProviderError(
            f"bad log cursor {cursor!r} (expected a byte offset)") from None
    try:
        with open(run_dir / sup.LOG_FILE, "rb") as f:
            f.seek(offset)
            data = f.read(MAX_LOG_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return LogBatch([], str(offset))
    lines: list[LogLine] = []
    consumed = 0
    while len(lines) < max_lines:
        end = data.find(b"\n", consumed)
        if end < 0:
            break
        raw, consumed = data[consumed:end], end + 1
        line = _parse_log_line(raw)
        if line is not None:
            lines.append(line)
    if consumed == 0 and len(data) == MAX_LOG_BYTES:
        consumed = len(data)  # no newline in a full read: damage, not a line; step over it
    return LogBatch(lines, str(offset + consumed))


def _parse_log_line(raw: bytes) -> LogLine | None:
    try:
        record = json.loads(raw)
        return LogLine(timestamp=datetime.fromtimestamp(float(record["t"]), UTC),
                       message=str(record["m"]), stream=str(record.get("s", "stdout")))
    except (ValueError, KeyError, TypeError):
        return None  # a damaged line is skipped, never fatal


# --------------------------------------------------------------------- the provider


def _signal_group(job: dict[str, Any] | None, signum: int) -> None:
    """Signal the job's process group, only if its leader is still the recorded process."""
    if job and _alive(job):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(job["pid"]), signum)


async def _locked(path: Path, deadline: float = 10.0) -> int:
    """An exclusive flock on ``path`` without blocking the event loop; returns the fd."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    give_up = time.monotonic() + deadline
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > give_up:
                os.close(fd)
                raise RetryableProviderError(f"another submit holds {path}") from None
            await asyncio.sleep(0.01)


class ProcessProvider:
    """Runs each job as a supervised child process on this host."""

    pool_type: ClassVar[str] = "process"
    config_model: ClassVar[type[ProviderConfig]] = ProcessConfig
    # Status comes from local files: cheap enough to look often.
    poll_interval: ClassVar[float] = 0.2

    # -- templates and configuration

    def default_base_job_template(self) -> dict[str, Any]:
        return {
            "job_configuration": {
                "command": "{{ command }}",
                "env": "{{ env }}",
                "working_dir": "{{ working_dir }}",
                "timeout": "{{ timeout }}",
                "stream_output": "{{ stream_output }}",
                "labels": "{{ labels }}",
            },
            "variables": {
                "type": "object",
                "properties": {
                    **COMMON_VARIABLES,
                    "working_dir": {
                        "type": ["string", "null"], "title": "Working directory",
                        "default": None,
                        "description": "Parent directory of each run's fresh directory; "
                                       "default $PUSHPOOL_HOME/runs.",
                    },
                    "stream_output": {
                        "type": "boolean", "title": "Capture output", "default": True,
                        "description": "Keep the job's stdout and stderr as the run's logs.",
                    },
                },
            },
        }

    def validate_config(self, config: Mapping[str, Any]) -> None:
        parse_config(config)

    # -- runs

    async def submit(self, spec: JobSpec) -> InfraRef:
        self._reap()
        try:
            config = parse_config(spec.config)
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from exc
        argv = list(spec.command or config.command or [])
        if not argv:
            raise PermanentProviderError(
                "command is empty: set the deployment's command or the pool's command variable")
        run_dir = runs_root(config) / run_dir_name(spec.job_name)
        submission = InfraRef(infra_id=str(run_dir))
        if _taken(run_dir):
            return submission
        env = job_env(spec.env, config.env)
        work_dir = run_dir / sup.WORK_DIR
        check_command(argv[0], env, work_dir)
        try:
            run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentProviderError(
                f"cannot create the run directory {run_dir}: {exc.strerror}; "
                "check working_dir or PUSHPOOL_HOME") from exc
        lock = await _locked(run_dir / LOCK_FILE)
        try:
            work_dir.mkdir(exist_ok=True)
            _step_done("run_dir")
            await self._launch(spec, argv, env, config, run_dir, work_dir)
        finally:
            os.close(lock)
        return submission

    async def _launch(self, spec: JobSpec, argv: list[str], env: dict[str, str],
                      config: ProcessConfig, run_dir: Path, work_dir: Path) -> None:
        """Launch unless a supervisor has the run or is starting to take it. Called under
        the submit lock; the payload and launch record are written holding the supervisor
        lock, so no supervisor of an earlier launch can take the run in between."""
        guard = sup.try_lock(str(run_dir / sup.SUPERVISOR_LOCK))
        if guard is None:
            return  # a supervisor holds the run
        try:
            if _launching(run_dir):
                return
            launch_id = uuid.uuid4().hex
            payload = {"argv": argv, "env": env, "cwd": str(work_dir),
                       "capture": config.stream_output, "launch_id": launch_id}
            await _write_payload(run_dir, payload)
            _step_done("payload")
            launch: dict[str, Any] = {
                "run_id": spec.run_id, "job_name": spec.job_name, "attempt": spec.attempt,
                "program": argv[0], "capture": config.stream_output, "launch_id": launch_id,
                "created_at": time.time(), "supervisor_pid": None, "supervisor_start": None,
            }
            sup.write_json_atomic(str(run_dir / sup.LAUNCH_FILE), launch)
            _step_done("launch")
        finally:
            os.close(guard)
        proc = _spawn_supervisor(run_dir, work_dir, launch_id)
        _step_done("spawn")
        launch["supervisor_pid"] = proc.pid
        launch["supervisor_start"] = sup.proc_start_time(proc.pid)
        sup.write_json_atomic(str(run_dir / sup.LAUNCH_FILE), launch)
        _step_done("supervisor_pid")

    async def status(self, ref: InfraRef) -> InfraStatus:
        self._reap()
        return read_status(_run_dir(ref.infra_id))

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        infra_ids = [ref.infra_id for ref in refs]
        self._reap()
        now = time.time()
        return {infra_id: read_status(_run_dir(infra_id), now) for infra_id in infra_ids}

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        """SIGTERM the job's process group, SIGKILL it after ``grace_seconds``.

        The supervisor enforces the grace period too (so a dispatcher restart mid-grace
        does not leave the job alive); this coroutine waits for it asynchronously and
        kills the group itself if the supervisor cannot."""
        run_dir = _run_dir(ref.infra_id)
        if read_status(run_dir).phase.is_final:
            return
        sup.write_json_atomic(str(run_dir / sup.CANCEL_FILE),
                              {"requested_at": time.time(), "grace_seconds": grace_seconds})
        launch = _read(run_dir, sup.LAUNCH_FILE) or {}
        own_record = _read(run_dir, sup.SUPERVISOR_FILE)  # present once its handlers are in
        if own_record and _alive(own_record):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(own_record["pid"]), signal.SIGUSR1)
        else:
            _signal_group(_read(run_dir, sup.JOB_FILE), signal.SIGTERM)
        if await self._wait_final(run_dir, grace_seconds):
            return
        _signal_group(_read(run_dir, sup.JOB_FILE), signal.SIGKILL)
        if _alive(_supervisor_record(run_dir, launch)):
            await self._wait_final(run_dir, 5.0)

    async def _wait_final(self, run_dir: Path, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        delay = _POLL_FIRST
        while True:
            self._reap()
            if read_status(run_dir).phase.is_final:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        return read_logs(_run_dir(ref.infra_id), cursor)

    async def cleanup(self, ref: InfraRef) -> None:
        """Remove the run directory once the run is final; a running run is left alone."""
        run_dir = _run_dir(ref.infra_id)
        if not (run_dir / sup.LAUNCH_FILE).exists():
            return  # not ours, or already gone: never delete a directory we did not make
        if not read_status(run_dir).phase.is_final:
            return
        # A crashed supervisor may leave its job running: it goes with the run.
        _signal_group(_read(run_dir, sup.JOB_FILE), signal.SIGKILL)
        await asyncio.to_thread(shutil.rmtree, run_dir, True)

    def process_ids(self, infra_id: str) -> ProcessIds:
        run_dir = _run_dir(infra_id)
        launch = _read(run_dir, sup.LAUNCH_FILE) or {}
        supervisor = _supervisor_record(run_dir, launch) or {}
        job = _read(run_dir, sup.JOB_FILE) or {}
        return ProcessIds(supervisor.get("pid"), job.get("pid"))

    # -- pools

    async def provision(self, pool_name: str, options: Mapping[str, Any],
                        apply: bool) -> ProvisionPlan:
        return ProvisionPlan(target="this host", steps=[])

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool) -> ProvisionPlan:
        return ProvisionPlan(target="this host", steps=[])

    async def close(self) -> None:
        """Nothing to release but finished supervisors; running jobs keep running."""
        self._reap()

    def _reap(self) -> None:
        _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]


def _taken(run_dir: Path) -> bool:
    """A supervisor took the run: its job may exist, so the run is never launched again
    (status says how it fares, CRASHED included)."""
    return any((run_dir / name).exists()
               for name in (sup.SUPERVISOR_FILE, sup.JOB_FILE, sup.EXIT_FILE))


def _launching(run_dir: Path) -> bool:
    """Taken, or the supervisor of the recorded launch is alive and about to take it."""
    if _taken(run_dir):
        return True
    launch = _read(run_dir, sup.LAUNCH_FILE) or {}
    return bool(launch.get("supervisor_pid")) and _alive(
        {"pid": launch["supervisor_pid"], "start": launch.get("supervisor_start")})


async def _write_payload(run_dir: Path, payload: dict[str, Any]) -> None:
    path, data = str(run_dir / sup.PAYLOAD_FILE), json.dumps(payload).encode()
    if len(data) < PAYLOAD_IN_THREAD_BYTES:
        sup.write_atomic(path, data)
    else:
        await asyncio.to_thread(sup.write_atomic, path, data)


def _step_done(step: str) -> None:
    """The fault-injection point of a launch (see the module's docstring)."""
    if os.environ.get(CRASH_AFTER_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _spawn_supervisor(run_dir: Path, work_dir: Path,
                      launch_id: str) -> subprocess.Popen[bytes]:
    """Start the supervisor in a session of its own, with no pipe to us.

    Spawning is a fork and exec (a few ms), so it runs inline rather than in a thread."""
    log = os.open(run_dir / sup.SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(log, "ab") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-I", sup.__file__, str(run_dir), launch_id],
            stdin=subprocess.DEVNULL, stdout=errors, stderr=errors, cwd=work_dir,
            env=job_env({}, {}), start_new_session=True,
        )
    _SPAWNED.append(proc)
    return proc


def parse_config(config: Mapping[str, Any]) -> ProcessConfig:
    """The rendered job configuration as a ``ProcessConfig``; ValueError names the field."""
    try:
        return ProcessConfig.model_validate(dict(config))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "job_configuration"
        raise ValueError(
            f"job_configuration.{field}: {first['msg']}; fix the pool's base job template "
            "or the job variables") from None


PROVIDER = ProcessProvider()
