"""The CLI journey of the core issue, against a real server process, on SQLite and
PostgreSQL: pools, queues, deploy from pushpool.yaml with a schedule, run and watch, logs,
inspect, failure, cancel, pause and resume, bad input, and a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import truncate_postgres
from tests.fakes.pushpool_server import ServerProcess

pytestmark = pytest.mark.slow

DEPLOYMENTS = textwrap.dedent("""\
    deployments:
      - name: hi
        flow_name: hello
        command: ["python3", "{hello}"]
        parameters: {name: world}
        work_pool: {name: local, job_variables: {env: {MODE: yaml}}}
        schedules:
          - cron: "0 9 * * *"
            timezone: Europe/Paris
      - name: fails
        flow_name: hello
        command: ["python3", "-c", "import sys; print('about to fail'); sys.exit(3)"]
        work_pool: {name: local}
      - name: sleepy
        flow_name: hello
        command: ["python3", "-c", "import time; print('sleeping', flush=True); time.sleep(120)"]
        work_pool: {name: local, work_queue_name: critical}
      - name: other
        flow_name: hello
        command: ["python3", "-c", "print('other pool')"]
        work_pool: {name: spare}
""")


HELLO = textwrap.dedent("""\
    import json, os
    name = json.loads(os.environ["PUSHPOOL_PARAMETERS"])["name"]
    print(f"Hello, {name}!")
    print("mode=" + os.environ["MODE"])
""")


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # polling interval of the check, not a synchronisation point
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    env: dict[str, str] = {"PUSHPOOL_SCHEDULER_MIN_RUNS": "3"}
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        truncate_postgres(url)
        env["PUSHPOOL_DATABASE_URL"] = url
    srv = ServerProcess(tmp_path / "home", env=env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class Cli:
    def __init__(self, server: ServerProcess, cwd: Path):
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")},
                    **server.client_env(), "COLUMNS": "200"}
        self.cwd = cwd

    def __call__(self, *args: str, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], env=self.env,
                              cwd=self.cwd, capture_output=True, text=True, timeout=120)
        output = done.stdout + done.stderr
        assert done.returncode == code, f"pushpool {' '.join(args)} -> {done.returncode}:\n{output}"
        return output

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--output", "json"))

    def run_state(self, run_id: str) -> str:
        return str(self.json("run", "inspect", run_id)["state"])


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_cli_journey(server: ServerProcess, tmp_path: Path) -> None:
    cli = Cli(server, tmp_path)
    (tmp_path / "hello.py").write_text(HELLO)
    (tmp_path / "pushpool.yaml").write_text(DEPLOYMENTS.replace("{hello}",
                                                                str(tmp_path / "hello.py")))

    # Pools and queues.
    assert "local" in cli("work-pool", "create", "local", "--type", "process")
    cli("work-pool", "create", "spare", "--type", "process")
    assert "already exists" in one_error_line(
        cli("work-pool", "create", "local", "--type", "process", code=2))
    assert "type" in one_error_line(cli("work-pool", "create", "x", "--type", "nope", code=2))
    cli("work-queue", "create", "critical", "--pool", "local", "--priority", "1",
        "--concurrency-limit", "1")
    assert "--concurrency-limit" in one_error_line(
        cli("work-queue", "create", "zero", "--pool", "local", "--concurrency-limit", "0",
            code=2))
    pools = {p["name"]: p for p in cli.json("work-pool", "ls")}
    assert set(pools) == {"local", "spare"}
    assert pools["local"]["queues"] == ["critical", "default"]
    table = cli("work-pool", "ls")
    assert "local" in table and "process" in table
    template = json.loads(cli("work-pool", "get-default-base-job-template", "--type", "process"))
    assert "command" in template["variables"]["properties"]

    # Deploy with a schedule: the scheduler materialises runs ahead.
    out = cli("deploy", "--all")
    assert "Successfully created/updated all deployments!" in out
    assert "$ pushpool deployment run 'hello/hi'" in out
    assert {d["name"] for d in cli.json("deployment", "ls")} == {"hi", "fails", "sleepy",
                                                                 "other"}
    preview = wait_until(lambda: [r for r in cli.json("work-pool", "preview", "local")
                                  if r["deployment_name"] == "hello/hi"] or None,
                         what="scheduled runs")
    assert len(preview) >= 3
    assert all(r["scheduled_time"].endswith(("07:00:00Z", "08:00:00Z")) for r in preview)

    # Run and watch: logs, merged job variables, state history.
    out = cli("deployment", "run", "hello/hi", "--param", "name=ada", "--job-variable",
              "env.MODE=cli", "--watch")
    assert "Hello, ada!" in out and "mode=cli" in out and "COMPLETED" in out
    done = cli.json("run", "ls", "--state", "COMPLETED", "--deployment", "hello/hi")
    assert len(done) == 1
    run_id = done[0]["id"]
    assert "Hello, ada!" in cli("run", "logs", run_id)
    inspected = cli.json("run", "inspect", run_id)
    assert inspected["parameters"] == {"name": "ada"}
    assert inspected["job_configuration"]["env"]["MODE"] == "cli"
    assert [h["state"] for h in inspected["history"]][-2:] == ["RUNNING", "COMPLETED"]
    assert inspected["infra_id"]
    assert "COMPLETED" in cli("run", "inspect", run_id)

    # A failing command: FAILED with its exit code, and --watch exits non-zero.
    out = cli("deployment", "run", "hello/fails", "--watch", code=1)
    assert "about to fail" in out
    failed = cli.json("run", "ls", "--state", "FAILED")
    assert failed[0]["exit_code"] == 3

    # Cancel a running job.
    started = cli.json("deployment", "run", "hello/sleepy")
    sleepy = started["id"]
    wait_until(lambda: cli.run_state(sleepy) == "RUNNING", what="sleepy running")
    cli("run", "cancel", sleepy)
    wait_until(lambda: cli.run_state(sleepy) == "CANCELLED", what="sleepy cancelled")

    # Pause: runs stay SCHEDULED (LATE once past the threshold) until resume.
    cli("work-pool", "pause", "local")
    held = cli.json("deployment", "run", "hello/hi")["id"]
    other = cli.json("deployment", "run", "hello/other")["id"]
    wait_until(lambda: cli.run_state(other) == "COMPLETED", what="run in another pool")
    assert cli.run_state(held) == "SCHEDULED"
    cli("work-pool", "resume", "local")
    wait_until(lambda: cli.run_state(held) == "COMPLETED", what="run after resume")

    # Bad input: one line, exit 2, nothing changed.
    before = cli.json("run", "ls", "--limit", "100")
    assert "--params" in one_error_line(
        cli("deployment", "run", "hello/hi", "--params", "{bad", code=2))
    assert "not found" in one_error_line(cli("deployment", "run", "nope/nope", code=2))
    assert "job_variables.cpu" in one_error_line(
        cli("deployment", "run", "hello/hi", "--job-variable", "cpu=lots", code=2))
    assert cli.json("run", "ls", "--limit", "100") == before


def test_ctrl_c_stops_the_server_cleanly(server: ServerProcess) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(30) == 0
    assert "Traceback" not in server.log_path.read_text()
