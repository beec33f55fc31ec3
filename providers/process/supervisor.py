"""The small process that owns one local job: spawns it, records its logs and its exit.

``providers.process`` writes the launch payload (argv, env, cwd, capture, launch id) to
``payload.json`` in the run directory, then starts ``python -I supervisor.py RUN_DIR
LAUNCH_ID`` in a session of its own. The supervisor takes the run's ``supervisor.lock``,
checks that the payload is still the launch it was started for and that no supervisor took
the run before it, writes ``supervisor.json`` (from then on the job may exist, so the run is
never launched again), spawns the job in a process group of its own, removes the payload
(it holds the job's env), appends each stdout/stderr line to ``logs.jsonl`` and, when the
job ends, writes ``exit.json``. A supervisor whose launch was superseded (the dispatcher
died mid-launch and a resubmit launched again) exits without doing anything. Nothing ties
it to the dispatcher (no pipes, no shared session), so the job outlives a dispatcher
restart or Ctrl-C, and any process can read the run's state from the files alone.

Standard library only: it runs under ``-I`` (isolated) so the job's PYTHON* variables and
the dispatcher's site-packages cannot change how it behaves. ``providers.process`` imports
the file names and small helpers below, so both sides agree on the layout.

Signals: SIGUSR1 means "cancel requested" (read ``cancel.json``: SIGTERM the job's group,
SIGKILL it after the grace period); SIGTERM is forwarded to the job's group; SIGINT and
SIGHUP do nothing to it (and the job gets them back at their defaults).
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO

PAYLOAD_FILE = "payload.json"  # written by the provider: argv, env; removed once the job runs
LAUNCH_FILE = "launch.json"  # written by the provider: who, what, launch id, supervisor pid
SUPERVISOR_LOCK = "supervisor.lock"  # held by the supervisor that owns the run, for life
SUPERVISOR_FILE = "supervisor.json"  # written here once the run is ours: pid, start, launch
JOB_FILE = "job.json"  # written here once the job runs: its pid (= its process group)
LOG_FILE = "logs.jsonl"  # one {"t": epoch, "s": stream, "m": text} per line
CANCEL_FILE = "cancel.json"  # written by the provider: {"requested_at", "grace_seconds"}
EXIT_FILE = "exit.json"  # written here last: exit code or signal, cancelled, error
SUPERVISOR_LOG = "supervisor.log"  # the supervisor's own stderr
WORK_DIR = "work"  # the job's fresh working directory

MAX_LINE_BYTES = 64 * 1024  # a longer line is split, so one line can never blow memory
PUMP_JOIN_SECONDS = 5.0  # how long to wait for output held open by escaped descendants
LOCK_WAIT_SECONDS = 5.0  # the provider holds the lock for milliseconds; a supervisor, for life


# ------------------------------------------------------------------ shared helpers


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None if it is gone.

    A pid is only "ours" if its start time matches the one recorded: pids get reused.
    A zombie counts as gone. Without /proc, fall back to "exists" with start time 0.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return _exists_without_proc(pid)
    # The command name (field 2) may contain spaces and parens: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # field 22 overall: starttime


def _exists_without_proc(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


def write_atomic(path: str, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one. Owner-only: a run's
    files may hold the job's env."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data).encode("utf-8"))


def try_lock(path: str) -> int | None:
    """An exclusive flock on ``path`` if free now (the fd holding it), else None."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ------------------------------------------------------------------ the supervisor


class Supervisor:
    """One job's owner. All methods run in this (supervisor) process."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.child: subprocess.Popen[bytes] | None = None
        self.kill_timer: threading.Timer | None = None
        self.log_lock = threading.Lock()
        self.log_fd = -1
        self.lock_fd = -1  # supervisor.lock, held for life once the run is ours
        self.finished = False  # set with the exit record; later output is dropped

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    # -- signals (run in the main thread between bytecodes, also while it waits)

    def install_signal_handlers(self) -> None:
        # No-op handlers rather than SIG_IGN: an ignored signal stays ignored in the job
        # across exec, a handled one is reset to its default there.
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.signal(signal.SIGHUP, lambda *_: None)
        signal.signal(signal.SIGUSR1, lambda *_: self.on_cancel_requested())
        signal.signal(signal.SIGTERM, lambda *_: self.signal_job(signal.SIGTERM))

    def on_cancel_requested(self) -> None:
        request = read_json(self.path(CANCEL_FILE)) or {}
        grace = float(request.get("grace_seconds", 30.0))
        self.signal_job(signal.SIGTERM)
        if self.kill_timer is None:
            self.kill_timer = threading.Timer(max(grace, 0.0), self.signal_job,
                                              args=(signal.SIGKILL,))
            self.kill_timer.daemon = True
            self.kill_timer.start()

    def signal_job(self, signum: int) -> None:
        child = self.child
        if child is None or child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signum)

    # -- logs

    def write_log(self, stream: str, text: str) -> None:
        record = json.dumps({"t": time.time(), "s": stream, "m": text}, ensure_ascii=False)
        data = (record + "\n").encode("utf-8")
        with self.log_lock:
            if not self.finished:
                os.write(self.log_fd, data)

    def pump(self, pipe: BinaryIO, stream: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with pipe:
            while True:
                chunk = pipe.readline(MAX_LINE_BYTES)
                if not chunk:
                    break
                text = decoder.decode(chunk)
                if text.endswith("\n"):
                    text = text[:-1].removesuffix("\r")
                self.write_log(stream, text)
            tail = decoder.decode(b"", final=True)
            if tail:
                self.write_log(stream, tail)

    # -- life cycle

    def run(self, payload: dict[str, Any]) -> int:
        argv = [str(a) for a in payload["argv"]]
        capture = bool(payload.get("capture", True))
        out = subprocess.PIPE if capture else subprocess.DEVNULL
        if capture:
            self.log_fd = os.open(self.path(LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                  0o600)
        try:
            self.child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                cwd=payload.get("cwd"), env=payload["env"], process_group=0,
            )
        except FileNotFoundError as exc:
            if exc.filename == payload.get("cwd"):
                return self.finish(error=f"working directory is missing: {exc.filename}")
            return self.finish(error=f"command not found: {argv[0]}")
        except OSError as exc:
            return self.finish(error=f"could not start {argv[0]}: {exc.strerror or exc}")
        child = self.child
        write_json_atomic(self.path(JOB_FILE), {
            "pid": child.pid, "start": proc_start_time(child.pid), "started_at": time.time()})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(PAYLOAD_FILE))  # the job's env rests on disk no longer
        # A cancel that came before the job existed: honour it now.
        if os.path.exists(self.path(CANCEL_FILE)):
            self.on_cancel_requested()
        pumps = [threading.Thread(target=self.pump, args=(pipe, name), daemon=True)
                 for pipe, name in ((child.stdout, "stdout"), (child.stderr, "stderr")) if pipe]
        for thread in pumps:
            thread.start()
        returncode = child.wait()
        if self.kill_timer is not None:
            self.kill_timer.cancel()
        # The job's leader is gone; its leftover descendants go with it (as in a container).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + PUMP_JOIN_SECONDS
        for thread in pumps:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return self.finish(returncode=returncode)

    def finish(self, returncode: int | None = None, error: str | None = None) -> int:
        record: dict[str, Any] = {
            "exit_code": returncode if returncode is not None and returncode >= 0 else None,
            "signal": -returncode if returncode is not None and returncode < 0 else None,
            "cancelled": os.path.exists(self.path(CANCEL_FILE)),
            "error": error,
            "finished_at": time.time(),
        }
        if record["signal"] is not None:
            record["signal_name"] = signal_name(record["signal"])
        with self.log_lock:  # no pump may write after the exit record
            self.finished = True
            write_json_atomic(self.path(EXIT_FILE), record)
        return 0


def take_run(supervisor: Supervisor, launch_id: str) -> dict[str, Any] | None:
    """The launch payload if this supervisor is the one to run it, else None: the run's
    lock is held by another supervisor, or the payload is another launch's (superseded),
    or a supervisor took the run before. Called with the signal handlers in place; on
    success ``supervisor.json`` is written, and the lock stays held until this process
    ends (the job does not inherit it)."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while (lock := try_lock(supervisor.path(SUPERVISOR_LOCK))) is None:
        if time.monotonic() > deadline:
            return None  # only the supervisor that owns the run holds it this long
        time.sleep(0.01)  # the provider holds it for a few file writes
    supervisor.lock_fd = lock
    payload = read_json(supervisor.path(PAYLOAD_FILE))
    if (payload is None or payload.get("launch_id") != launch_id
            or os.path.exists(supervisor.path(SUPERVISOR_FILE))):
        return None
    write_json_atomic(supervisor.path(SUPERVISOR_FILE), {
        "pid": os.getpid(), "start": proc_start_time(os.getpid()), "launch_id": launch_id})
    return payload


def main(args: list[str]) -> int:
    if len(args) != 2:
        print("usage: supervisor.py RUN_DIR LAUNCH_ID  (payload in RUN_DIR/payload.json)",
              file=sys.stderr)
        return 2
    supervisor = Supervisor(os.path.abspath(args[0]))
    supervisor.install_signal_handlers()
    payload = take_run(supervisor, args[1])
    if payload is None:
        print(f"launch {args[1]} was superseded or taken by another supervisor: nothing "
              "to do", file=sys.stderr)
        return 0
    if not isinstance(payload.get("argv"), list) or not payload["argv"]:
        return supervisor.finish(error="launch payload has no argv")
    return supervisor.run(payload)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
