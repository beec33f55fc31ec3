"""A real pushpool server in its own process, for end-to-end tests.

``ServerProcess(home, port, env).start()`` runs ``dispatcher.server.run_server`` with
PUSHPOOL_HOME and PUSHPOOL_PORT set and returns once GET /api/health answers (with a
deadline, failing with the server's log). ``stop()`` sends SIGTERM and waits; runs it
submitted keep going, as they do in production, and a new ``start()`` re-attaches to them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.fakes import missing_sdks

START_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    home: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)  # extra PUSHPOOL_* settings
    proc: subprocess.Popen[bytes] | None = None
    # pip extras whose SDKs the server must not find (tests/fakes/missing_sdks.py)
    without_extras: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def client_env(self) -> dict[str, str]:
        """The environment a CLI or SDK process needs to talk to this server."""
        env = {"PUSHPOOL_API_URL": self.url}
        if self.env.get("PUSHPOOL_API_TOKEN"):
            env["PUSHPOOL_API_TOKEN"] = self.env["PUSHPOOL_API_TOKEN"]
        return env

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("PUSHPOOL_")}
        env.update({"PUSHPOOL_HOME": str(self.home), "PUSHPOOL_PORT": str(self.port),
                    "PUSHPOOL_WATCH_INTERVAL_SECONDS": "0.2",
                    "PUSHPOOL_CANCEL_GRACE_SECONDS": "2", "PUSHPOOL_LOG_LEVEL": "WARNING"})
        env.update(self.env)
        code = f"from dispatcher.server import run_server; run_server('127.0.0.1', {self.port})"
        if self.without_extras:
            code = missing_sdks.python_code(self.without_extras, code)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling interval of the readiness check, not a sync point
        self.stop()
        raise AssertionError(f"the server did not answer within {START_DEADLINE_SECONDS}s:\n"
                             f"{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_cli(server: ServerProcess, *args: str, code: int = 0,
            env: dict[str, str] | None = None) -> str:
    """``pushpool ARGS`` in a child process talking to ``server`` (no terminal, so no
    prompt), asserting its exit code; its stdout and stderr together."""
    child_env = {**{k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")},
                 **server.client_env(), "COLUMNS": "200", **(env or {})}
    done = subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], env=child_env,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == code, f"pushpool {' '.join(args)} -> {done.returncode}:\n{output}"
    return output
