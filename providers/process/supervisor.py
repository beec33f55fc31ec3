"""The small process that owns one local job: spawns it, records its logs and its exit.

``providers.process`` starts ``python -I supervisor.py RUN_DIR`` in a session of its
own and writes a JSON launch payload (argv, env, cwd, capture) to the supervisor's stdin,
then closes it. The supervisor spawns the job in a process group of its own, appends each
stdout/stderr line to ``logs.jsonl`` and, when the job ends, writes ``exit.json``. Nothing
ties it to the dispatcher (no pipes, no shared session), so the job outlives a dispatcher
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
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO

LAUNCH_FILE = "launch.json"  # written by the provider: who, what, supervisor pid
SUPERVISOR_FILE = "supervisor.json"  # written here at start: our pid and start time
JOB_FILE = "job.json"  # written here once the job runs: its pid (= its process group)
LOG_FILE = "logs.jsonl"  # one {"t": epoch, "s": stream, "m": text} per line
CANCEL_FILE = "cancel.json"  # written by the provider: {"requested_at", "grace_seconds"}
EXIT_FILE = "exit.json"  # written here last: exit code or signal, cancelled, error
SUPERVISOR_LOG = "supervisor.log"  # the supervisor's own stderr
WORK_DIR = "work"  # the job's fresh working directory

MAX_LINE_BYTES = 64 * 1024  # a longer line is split, so one line can never blow memory
PUMP_JOIN_SECONDS = 5.0  # how long to wait for output held open by escaped descendants


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


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


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


def read_payload() -> dict[str, Any]:
    """The launch payload from stdin; stdin is then pointed at /dev/null."""
    raw = sys.stdin.buffer.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    payload = json.loads(raw)
    if not isinstance(payload, dict) or not payload.get("argv"):
        raise ValueError("launch payload has no argv")
    return payload


def main(args: list[str]) -> int:
    if len(args) != 1:
        print("usage: supervisor.py RUN_DIR  (launch payload on stdin)", file=sys.stderr)
        return 2
    supervisor = Supervisor(os.path.abspath(args[0]))
    supervisor.install_signal_handlers()
    write_json_atomic(supervisor.path(SUPERVISOR_FILE),
                      {"pid": os.getpid(), "start": proc_start_time(os.getpid())})
    try:
        payload = read_payload()
    except (ValueError, UnicodeDecodeError) as exc:
        return supervisor.finish(error=f"incomplete launch payload ({exc})")
    return supervisor.run(payload)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
