"""Unit tests of the pushpool CLI: argument parsing, pushpool.yaml mapping, output and errors.

The API here is a small recording stub (http.server on 127.0.0.1) that answers canned JSON,
so these tests check what the CLI sends and how it prints what it gets back; the canned
objects are validated against dispatcher.models so they keep the API's real shapes. The
end-to-end journey against the real server lives elsewhere.
"""

from __future__ import annotations

import json
import re
import resource
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from dispatcher import models
from dispatcher.cli import app
from dispatcher.cli import runs as cli_runs
from dispatcher.cli.args import (
    MAX_START_AHEAD,
    json_or_string,
    parse_duration,
    parse_job_variables,
    parse_params,
    scheduled_time,
)
from dispatcher.cli.deploy import parse_deployments
from dispatcher.cli.output import DEPLOY_SUCCESS, CliError
from dispatcher.client import DEFAULT_API_URL

PROJECT = Path(__file__).resolve().parents[1]
NOW = "2026-01-01T09:00:00Z"
TOKEN = "s3cret-token-value"


# ---------------------------------------------------------------------------- the stub API


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class StubApi:
    """Answers (method, path) with queued canned responses; the last one repeats."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    routes: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, *responses: tuple[int, Any]) -> None:
        self.routes[(method, path)] = list(responses)

    def next_response(self, method: str, path: str) -> tuple[int, Any]:
        with self.lock:
            queue = self.routes.get((method, path))
            if not queue:
                return 404, {"error": "not_found", "message": f"stub has no {method} {path}",
                             "details": []}
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def sent(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


def _handler(stub: StubApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            stub.requests.append(Recorded(self.command, parts.path, parse_qs(parts.query),
                                          {k.lower(): v for k, v in self.headers.items()},
                                          json.loads(raw) if raw else None))
            status, body = stub.next_response(self.command, parts.path)
            if isinstance(body, bytes):
                payload, kind = body, "text/plain"
            else:
                payload, kind = (b"" if body is None else json.dumps(body).encode(),
                                 "application/json")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def stub() -> Iterator[StubApi]:
    api = StubApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


def invoke(stub: StubApi | None, *args: str, token: str | None = None,
           input: str | None = None) -> Any:
    env = {"PUSHPOOL_API_URL": stub.url if stub else DEFAULT_API_URL,
           "PUSHPOOL_API_TOKEN": token, "COLUMNS": "200", "NO_COLOR": "1"}
    return CliRunner().invoke(app, list(args), env=env, input=input)


# ---------------------------------------------------------------------------- canned objects


def pool_json(name: str = "local", **extra: Any) -> dict[str, Any]:
    data = {"id": "p-1", "name": name, "type": "process", "description": None,
            "base_job_template": {"job_configuration": {"command": "{{ command }}"},
                                  "variables": {"type": "object", "properties": {}}},
            "concurrency_limit": None, "paused": False, "late_after_seconds": 15.0,
            "paused_reason": None, "provisioned": None, "created": NOW, "updated": NOW,
            "queues": ["default"], "active_runs": 0, **extra}
    return models.WorkPool.model_validate(data).model_dump(mode="json")


def deployment_json(name: str = "my-deployment", flow: str = "hello") -> dict[str, Any]:
    data = {"id": "d-1", "name": name, "flow_name": flow, "pool_name": "local",
            "queue_name": "default", "command": ["python", "-c", "print('hi')"],
            "created": NOW, "updated": NOW}
    return models.Deployment.model_validate(data).model_dump(mode="json")


def run_json(state: str = "SCHEDULED", history: list[tuple[str, str]] | None = None,
             **extra: Any) -> dict[str, Any]:
    data = {"id": "r-1", "name": "brave-otter", "deployment_id": "d-1",
            "deployment_name": "hello/my-deployment", "pool_name": "local",
            "queue_name": "default", "state": state, "scheduled_time": NOW,
            "created": NOW, "updated": NOW,
            "history": [{"state": s, "timestamp": NOW, "message": m}
                        for s, m in (history or [])], **extra}
    return models.Run.model_validate(data).model_dump(mode="json")


def log_json(log_id: int, message: str) -> dict[str, Any]:
    data = {"id": log_id, "run_id": "r-1", "timestamp": NOW, "message": message}
    return models.LogEntry.model_validate(data).model_dump(mode="json")


# ---------------------------------------------------------------------------- --param & co


def test_param_values_are_json_when_they_parse_else_strings() -> None:
    assert parse_params(["x=1", "s=hello", "l=[1, 2]", "b=true", "q=\"7\"", "e=", "eq=a=b"],
                        None) == {"x": 1, "s": "hello", "l": [1, 2], "b": True, "q": "7",
                                  "e": "", "eq": "a=b"}
    assert json_or_string("{not json") == "{not json"


def test_param_wins_over_params_json() -> None:
    assert parse_params(["x=2"], '{"x": 1, "y": {"z": null}}') == {"x": 2, "y": {"z": None}}


@pytest.mark.parametrize("bad", ["{nope", "[1, 2]", "3"])
def test_params_must_be_a_json_object(bad: str) -> None:
    with pytest.raises(CliError, match="--params"):
        parse_params([], bad)


def test_param_without_equals_names_the_flag() -> None:
    with pytest.raises(CliError, match="--param 'x' is not KEY=VALUE"):
        parse_params(["x"], None)


def test_job_variables_dotted_keys_build_nested_dicts() -> None:
    assert parse_job_variables(["env.FOO=bar", "env.N=3", "cpu=512", "a.b.c=[1]"]) == {
        "env": {"FOO": "bar", "N": 3}, "cpu": 512, "a": {"b": {"c": [1]}}}
    with pytest.raises(CliError, match="already set to a plain value"):
        parse_job_variables(["env=1", "env.FOO=bar"])
    with pytest.raises(CliError, match="empty part"):
        parse_job_variables(["env..FOO=bar"])


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200),
                                               ("1d", 86400), ("1h30m", 5400), ("0s", 0)])
def test_start_in_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["10", "ten", "5x", "", "m10", "-5m", "1.5h"])
def test_start_in_rejects_what_is_not_a_duration(bad: str) -> None:
    with pytest.raises(CliError, match="--start-in"):
        parse_duration(bad)


def test_start_at_without_zone_is_local_time_and_answered_in_utc() -> None:
    now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert scheduled_time("10m", None, now=now) == now + timedelta(minutes=10)
    assert scheduled_time(None, "2026-01-01T10:00:00+01:00") == now
    naive = scheduled_time(None, "2026-01-01T09:00:00")
    assert naive is not None and naive.tzinfo is UTC
    assert naive == datetime(2026, 1, 1, 9, 0).astimezone().astimezone(UTC)
    with pytest.raises(CliError, match="cannot be used together"):
        scheduled_time("1m", "2026-01-01T09:00:00Z")
    with pytest.raises(CliError, match="--start-at"):
        scheduled_time(None, "tomorrow")


def test_deployment_run_sends_parameters_job_variables_time_and_key(stub: StubApi) -> None:
    path = "/api/deployments/hello/my-deployment/runs"
    stub.answer("POST", path, (201, run_json(parameters={"x": 2, "y": 2, "name": "world"})))
    before = datetime.now(UTC)
    result = invoke(stub, "deployment", "run", "hello/my-deployment", "--param", "x=2",
                    "--param", "name=world", "--params", '{"x": 0, "y": 2}',
                    "--job-variable", "env.FOO=bar", "--job-variable", "cpu=512",
                    "--start-in", "10m", "--idempotency-key", "key-1")
    assert result.exit_code == 0, result.output
    (sent,) = stub.sent("POST", path)
    assert sent.body["parameters"] == {"x": 2, "y": 2, "name": "world"}
    assert sent.body["job_variables"] == {"env": {"FOO": "bar"}, "cpu": 512}
    start = datetime.fromisoformat(sent.body["scheduled_time"])
    assert timedelta(minutes=10) <= start - before < timedelta(minutes=10, seconds=30)
    assert sent.headers["idempotency-key"] == "key-1"
    assert "Created flow run 'brave-otter'." in result.output
    assert "└── UUID: r-1" in result.output


def test_deployment_run_reports_a_run_found_again_by_its_key(stub: StubApi) -> None:
    stub.answer("POST", "/api/deployments/hello/my-deployment/runs", (200, run_json()))
    result = invoke(stub, "deployment", "run", "hello/my-deployment", "--idempotency-key", "k")
    assert result.exit_code == 0, result.output
    assert "Found the existing flow run 'brave-otter'." in result.output


@pytest.mark.parametrize(("args", "flag"), [
    (["--params", "{bad json"], "--params"),
    (["--start-in", "5x"], "--start-in"),
    (["--start-in", "1m", "--start-at", "2026-01-01T00:00:00Z"], "--start-at"),
    (["--param", "novalue"], "--param"),
])
def test_bad_run_flags_exit_2_naming_the_flag_and_send_nothing(
        stub: StubApi, args: list[str], flag: str) -> None:
    result = invoke(stub, "deployment", "run", "hello/my-deployment", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ")
    assert flag in result.stderr.splitlines()[0]
    assert stub.requests == []


def test_deployment_name_must_have_flow_and_name(stub: StubApi) -> None:
    result = invoke(stub, "deployment", "inspect", "just-a-name")
    assert result.exit_code == 2
    assert "must be written FLOW/DEPLOYMENT" in result.stderr
    assert stub.requests == []


# ---------------------------------------------------------------------------- watching runs


def test_watch_prints_states_and_logs_and_exits_0_on_completed(
        stub: StubApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_runs, "POLL_SECONDS", 0.01)
    stub.answer("POST", "/api/deployments/hello/my-deployment/runs", (201, run_json()))
    stub.answer("GET", "/api/runs/r-1",
                (200, run_json("RUNNING", [("SCHEDULED", "created"),
                                           ("RUNNING", "pid 42")])),
                (200, run_json("COMPLETED", [("SCHEDULED", "created"), ("RUNNING", "pid 42"),
                                             ("COMPLETED", "exit code 0")])))
    stub.answer("GET", "/api/runs/r-1/logs", (200, [log_json(1, "hello")]),
                (200, [log_json(2, "bye")]), (200, []))
    result = invoke(stub, "deployment", "run", "hello/my-deployment", "--watch")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.index("is RUNNING: pid 42") < out.index("| hello") < out.index("| bye")
    assert out.index("| bye") < out.index("is COMPLETED: exit code 0")
    assert out.count("is RUNNING") == 1  # each state change printed once
    assert "finished in state COMPLETED" in out
    after = [r.query.get("after") for r in stub.sent("GET", "/api/runs/r-1/logs")]
    assert after[0] is None and after[1] == ["1"]


def test_watch_exits_1_when_the_run_failed(stub: StubApi,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_runs, "POLL_SECONDS", 0.01)
    stub.answer("POST", "/api/deployments/hello/my-deployment/runs", (201, run_json()))
    stub.answer("GET", "/api/runs/r-1",
                (200, run_json("FAILED", [("FAILED", "exit code 3")],
                               state_message="exit code 3")))
    stub.answer("GET", "/api/runs/r-1/logs", (200, []))
    result = invoke(stub, "deployment", "run", "hello/my-deployment", "--watch")
    assert result.exit_code == 1, result.output
    assert "finished in state FAILED: exit code 3" in result.stdout


def test_run_logs_follow_stops_at_a_final_state(stub: StubApi,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_runs, "POLL_SECONDS", 0.01)
    stub.answer("GET", "/api/runs/r-1", (200, run_json("RUNNING")), (200, run_json("RUNNING")),
                (200, run_json("CANCELLED")))
    stub.answer("GET", "/api/runs/r-1/logs", (200, [log_json(1, "one")]), (200, []),
                (200, [log_json(2, "two")]))
    result = invoke(stub, "run", "logs", "r-1", "--follow")
    assert result.exit_code == 0, result.output
    assert [line.split("| ")[1] for line in result.stdout.splitlines()] == ["one", "two"]
    assert len(stub.sent("GET", "/api/runs/r-1")) == 3


# ---------------------------------------------------------------------------- pushpool.yaml

FULL_YAML = """\
deployments:
  - name: my-deployment
    flow_name: hello
    command: ["python", "-c", "print('hi')"]
    entrypoint: null
    source: null
    image: null
    work_pool: {name: local, work_queue_name: default, job_variables: {env: {A: "1"}}}
    parameters: {x: 1}
    schedules:
      - cron: "*/5 * * * *"
        timezone: Europe/Paris
      - interval: 600
        anchor_date: 2026-01-01T00:00:00Z
      - rrule: "FREQ=DAILY;BYHOUR=9"
    tags: [a]
    description: says hi
    concurrency_limit: 2
    paused: false
"""


def test_yaml_maps_to_the_deployment_apply_body() -> None:
    (planned,) = parse_deployments(FULL_YAML)
    assert planned.full_name == "hello/my-deployment"
    assert planned.body == {
        "name": "my-deployment", "flow_name": "hello",
        "command": ["python", "-c", "print('hi')"],
        "pool_name": "local", "queue_name": "default", "job_variables": {"env": {"A": "1"}},
        "parameters": {"x": 1},
        "schedules": [{"cron": "*/5 * * * *", "timezone": "Europe/Paris"},
                      {"interval": 600, "anchor_date": "2026-01-01T00:00:00+00:00"},
                      {"rrule": "FREQ=DAILY;BYHOUR=9"}],
        "tags": ["a"], "description": "says hi", "concurrency_limit": 2, "paused": False}
    models.DeploymentApply.model_validate(planned.body)  # the API's own input model agrees


def test_flow_name_defaults_to_the_entrypoint_function() -> None:
    (planned,) = parse_deployments(
        "deployments:\n  - name: d\n    entrypoint: flows/hello.py:say_hi\n"
        "    source: https://example.com/repo.git\n    work_pool: local\n")
    assert planned.flow_name == "say_hi"
    assert planned.body["pool_name"] == "local"
    assert planned.body["entrypoint"] == "flows/hello.py:say_hi"


@pytest.mark.parametrize(("text", "expected"), [
    ("deployments:\n  - name: d\n    flow_name: f\n    wrok_pool: {name: local}\n",
     "pushpool.yaml:4: unknown key 'wrok_pool' in deployment 'd'"),
    ("deployments:\n  - name: d\n    flow_name: f\n    work_pool:\n      name: local\n"
     "      queue: q\n", "pushpool.yaml:6: unknown key 'queue' in deployment 'd' work_pool"),
    ("deployments:\n  - name: d\n    flow_name: f\n    work_pool: {name: local}\n"
     "    schedules:\n      - cron: '* * * * *'\n        tz: UTC\n",
     "pushpool.yaml:7: unknown key 'tz' in deployment 'd' schedule"),
    ("deployments:\n  - name: d\n    flow_name: f\n    work_pool: {name: local\n",
     "pushpool.yaml:5: invalid YAML"),
    ("deployments:\n  - name: d\n    flow_name: f\n",
     "pushpool.yaml:2: deployment 'd' needs work_pool"),
    ("deployments:\n  - name: d\n    work_pool: local\n",
     "pushpool.yaml:2: deployment 'd' needs flow_name or entrypoint"),
    ("deployments:\n  - name: d\n    entrypoint: flows/x.py\n    work_pool: local\n",
     "pushpool.yaml:3: deployment 'd': entrypoint 'flows/x.py' has no function"),
    ("deployments:\n  - name: d\n    flow_name: f\n    work_pool: {name: local}\n"
     "    schedules:\n      - cron: '* * * * *'\n        interval: 5\n",
     "pushpool.yaml:6: deployment 'd': schedules[0]: a schedule needs exactly one of cron"),
    ("deployments:\n  - name: d\n    flow_name: f\n    work_pool: {name: local}\n"
     "    concurrency_limit: 0\n",
     "pushpool.yaml:5: deployment 'd': concurrency_limit: must be a positive integer"),
    ("deployments:\n  - name: 'bad name!'\n    flow_name: f\n    work_pool: local\n",
     "pushpool.yaml:2: deployment 'bad name!': name: invalid deployment name"),
    ("deployments:\n  - name: d\n    flow_name: f\n    work_pool: {work_queue_name: q}\n",
     "pushpool.yaml:4: deployment 'd': work_pool needs a name"),
    ("deployments:\n  - name: d\n    flow_name: f\n    work_pool: local\n"
     "  - name: d\n    flow_name: f\n    work_pool: local\n",
     "pushpool.yaml:5: deployment 'f/d' is defined twice (first on line 2)"),
    ("deployments:\n  - name: d\n    name: e\n", "pushpool.yaml:3: key 'name' appears twice"),
    ("deploy:\n  - name: d\n", "pushpool.yaml:1: unknown key 'deploy' in the top level"),
    ("deployments: 3\n", "pushpool.yaml:1: 'deployments' must be a list"),
    ("- a\n", "pushpool.yaml:1: expected a mapping"),
])
def test_yaml_errors_name_the_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(CliError) as caught:
        parse_deployments(text)
    assert caught.value.message.startswith(expected), caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 2


def test_unknown_key_hint_suggests_the_close_one() -> None:
    with pytest.raises(CliError) as caught:
        parse_deployments("deployments:\n  - name: d\n    flow_name: f\n    work_pol: local\n")
    assert caught.value.hint == "did you mean 'work_pool'?"


def test_deploy_puts_each_deployment_and_prints_the_prefect_style_summary(
        stub: StubApi, tmp_path: Path) -> None:
    (tmp_path / "pushpool.yaml").write_text(FULL_YAML)
    stub.answer("PUT", "/api/deployments",
                (201, {"deployment": deployment_json(), "created": True}))
    result = invoke(stub, "deploy", "--file", str(tmp_path / "pushpool.yaml"))
    assert result.exit_code == 0, result.output
    (sent,) = stub.sent("PUT", "/api/deployments")
    assert sent.body == parse_deployments(FULL_YAML)[0].body
    lines = result.stdout.splitlines()
    assert lines[0] == DEPLOY_SUCCESS
    assert any("Deployments" in line for line in lines[1:3])
    row = next(line for line in lines if "hello/my-deployment" in line)
    assert "applied" in row and "created in work pool 'local'" in row
    assert "To execute flow runs from these deployments, run:" in lines
    assert "        $ pushpool deployment run 'hello/my-deployment'" in lines


def test_deploy_reports_a_rejected_deployment_and_exits_with_its_code(
        stub: StubApi, tmp_path: Path) -> None:
    (tmp_path / "pushpool.yaml").write_text(FULL_YAML)
    stub.answer("PUT", "/api/deployments",
                (404, {"error": "not_found", "message": "work pool 'local' not found",
                       "details": []}))
    result = invoke(stub, "deploy", "-f", str(tmp_path / "pushpool.yaml"))
    assert result.exit_code == 2
    assert DEPLOY_SUCCESS not in result.output
    row = next(line for line in result.stdout.splitlines() if "hello/my-deployment" in line)
    assert "failed" in row and "work pool 'local' not found" in row
    assert result.stderr.startswith("Error: 1 of 1 deployments could not be created/updated")


def test_deploy_picks_deployments_by_name_or_all(stub: StubApi, tmp_path: Path) -> None:
    two = ("deployments:\n  - {name: a, flow_name: f, work_pool: local}\n"
           "  - {name: b, flow_name: f, work_pool: local}\n")
    file = tmp_path / "pushpool.yaml"
    file.write_text(two)
    stub.answer("PUT", "/api/deployments", (200, {"deployment": deployment_json(),
                                                  "created": False}))
    result = invoke(stub, "deploy", "-f", str(file))
    assert result.exit_code == 2
    assert "defines 2 deployments (f/a, f/b)" in result.stderr
    assert invoke(stub, "deploy", "-f", str(file), "--name", "b").exit_code == 0
    assert [r.body["name"] for r in stub.sent("PUT", "/api/deployments")] == ["b"]
    assert invoke(stub, "deploy", "-f", str(file), "--all").exit_code == 0
    assert [r.body["name"] for r in stub.sent("PUT", "/api/deployments")] == ["b", "a", "b"]
    missing = invoke(stub, "deploy", "-f", str(file), "--name", "zzz")
    assert missing.exit_code == 2 and "--name 'zzz' is not in" in missing.stderr


def test_deploy_without_the_file_exits_2(stub: StubApi, tmp_path: Path) -> None:
    result = invoke(stub, "deploy", "--file", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {tmp_path / 'nope.yaml'} not found")
    assert stub.requests == []


def test_deploy_yaml_error_is_one_line_and_exit_2(stub: StubApi, tmp_path: Path) -> None:
    file = tmp_path / "pushpool.yaml"
    file.write_text("deployments:\n  - name: d\n    flow_name: f\n    colour: blue\n")
    result = invoke(stub, "deploy", "-f", str(file))
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert first == f"Error: {file}:4: unknown key 'colour' in deployment 'd'"
    assert stub.requests == []


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("status", "code"), [(400, 2), (404, 2), (409, 2), (413, 2),
                                              (422, 2), (401, 1), (403, 1), (500, 1),
                                              (503, 1)])
def test_api_errors_print_one_error_line_and_map_to_exit_codes(
        stub: StubApi, status: int, code: int) -> None:
    stub.answer("GET", "/api/work-pools/nope",
                (status, {"error": "x", "message": "work pool 'nope' went wrong",
                          "details": []}))
    result = invoke(stub, "work-pool", "inspect", "nope")
    assert result.exit_code == code
    assert result.stderr.splitlines()[0] == "Error: work pool 'nope' went wrong"
    assert result.stdout == ""


def test_not_found_error_comes_with_a_hint(stub: StubApi) -> None:
    stub.answer("GET", "/api/work-pools/nope",
                (404, {"error": "not_found", "message": "work pool 'nope' not found",
                       "details": []}))
    result = invoke(stub, "work-pool", "inspect", "nope")
    assert result.stderr.splitlines() == ["Error: work pool 'nope' not found",
                                          "list work pools with `pushpool work-pool ls`"]


def test_hint_already_in_the_api_message_is_not_repeated(stub: StubApi) -> None:
    stub.answer("GET", "/api/runs/nope",
                (404, {"error": "not_found",
                       "message": "run 'nope' not found; list runs with `pushpool run ls`",
                       "details": []}))
    result = invoke(stub, "run", "inspect", "nope")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: run 'nope' not found; list runs with `pushpool run ls`"]


def test_error_that_is_not_json_still_gives_one_line(stub: StubApi) -> None:
    stub.answer("GET", "/api/work-pools", (502, b"Bad Gateway\nfrom the proxy"))
    result = invoke(stub, "work-pool", "ls")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "Error: the API answered HTTP 502: Bad Gateway"


def test_unreachable_api_says_how_to_start_it() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(app, ["work-pool", "ls"], env={"PUSHPOOL_API_URL": url})
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: cannot reach the pushpool API at {url}; start it with `pushpool server "
        "start` or set PUSHPOOL_API_URL")


def test_token_is_sent_as_bearer_and_never_printed(stub: StubApi) -> None:
    stub.answer("GET", "/api/work-pools",
                (401, {"error": "unauthorized", "message": "missing or wrong token",
                       "details": []}))
    result = invoke(stub, "work-pool", "ls", token=TOKEN)
    assert stub.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert result.exit_code == 1
    assert TOKEN not in result.output
    assert "PUSHPOOL_API_TOKEN does not match" in result.stderr
    invoke(stub, "work-pool", "ls")
    assert "authorization" not in stub.requests[1].headers


# ---------------------------------------------------------------------------- output


@pytest.mark.parametrize(("args", "path", "canned"), [
    (["work-pool", "ls"], "/api/work-pools", [pool_json(), pool_json("other")]),
    (["work-pool", "inspect", "local"], "/api/work-pools/local", pool_json()),
    (["deployment", "ls"], "/api/deployments", [deployment_json()]),
    (["deployment", "inspect", "hello/my-deployment"], "/api/deployments/hello/my-deployment",
     deployment_json()),
    (["run", "ls"], "/api/runs", [run_json(display_state="LATE")]),
    (["run", "inspect", "r-1"], "/api/runs/r-1", run_json()),
    (["work-queue", "ls"], "/api/work-queues", []),
])
def test_output_json_prints_the_raw_api_json(stub: StubApi, args: list[str], path: str,
                                             canned: Any) -> None:
    stub.answer("GET", path, (200, canned))
    result = invoke(stub, *args, "--output", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == canned


def test_work_pool_ls_table(stub: StubApi) -> None:
    stub.answer("GET", "/api/work-pools",
                (200, [pool_json(concurrency_limit=3, paused=True, active_runs=2,
                                 queues=["default", "fast"])]))
    result = invoke(stub, "work-pool", "ls")
    assert result.exit_code == 0, result.output
    assert "Work Pools" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "local" in line)
    cells = [c.strip() for c in row.strip("│┃| ").split("│")]
    assert cells == ["local", "process", "paused", "3", "default, fast", "2"]


def test_run_ls_shows_late_and_sends_filters(stub: StubApi) -> None:
    stub.answer("GET", "/api/runs", (200, [run_json(display_state="LATE",
                                                    started_at=None)]))
    result = invoke(stub, "run", "ls", "--state", "late", "--pool", "local",
                    "--deployment", "hello/my-deployment", "--limit", "5")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "brave-otter" in line)
    assert "LATE" in row and " ago " in row  # relative; the absolute time is in the JSON
    assert stub.requests[0].query == {"state": ["LATE"], "pool": ["local"],
                                      "deployment": ["hello/my-deployment"], "limit": ["5"]}


def test_run_inspect_shows_configuration_history_and_infrastructure(stub: StubApi) -> None:
    stub.answer("GET", "/api/runs/r-1", (200, run_json(
        "COMPLETED", [("SCHEDULED", "created"), ("COMPLETED", "exit code 0")],
        parameters={"x": 1}, job_variables={"cpu": 512},
        job_configuration={"command": ["python", "x.py"], "cpu": 512},
        infra_id="pid-42", console_url="https://console.example/run/42")))
    result = invoke(stub, "run", "inspect", "r-1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in ("pid-42", "https://console.example/run/42", '"x": 1', '"cpu": 512',
                     "Job configuration (after merging)", '"x.py"', "State history",
                     "exit code 0"):
        assert expected in out, expected


def test_work_pool_create_sends_the_template_file(stub: StubApi, tmp_path: Path) -> None:
    template = {"job_configuration": {"command": "{{ command }}"}, "variables": {}}
    (tmp_path / "t.json").write_text(json.dumps(template))
    stub.answer("POST", "/api/work-pools", (201, pool_json("p1")))
    result = invoke(stub, "work-pool", "create", "p1", "--type", "process",
                    "--base-job-template", str(tmp_path / "t.json"), "--concurrency-limit", "4",
                    "--description", "mine", "--paused")
    assert result.exit_code == 0, result.output
    assert stub.requests[0].body == {"name": "p1", "type": "process", "paused": True,
                                     "description": "mine", "concurrency_limit": 4,
                                     "base_job_template": template}
    assert "Created work pool 'p1'!" in result.stdout


def test_work_pool_create_rejects_a_bad_template_file(stub: StubApi, tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text("{oops")
    result = invoke(stub, "work-pool", "create", "p1", "--type", "process",
                    "--base-job-template", str(tmp_path / "t.json"))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --base-job-template: ")
    assert stub.requests == []


def test_provisioning_an_unknown_pool_type_fails_before_any_request(stub: StubApi) -> None:
    result = invoke(stub, "work-pool", "create", "p1", "--type", "nope", "--provision-infra",
                    "--yes")
    assert result.exit_code == 2
    assert "unknown pool type 'nope'" in result.stderr
    assert stub.requests == []


def test_work_pool_delete_asks_unless_yes(stub: StubApi) -> None:
    stub.answer("GET", "/api/deployments", (200, []))
    stub.answer("DELETE", "/api/work-pools/p1", (204, None))
    refused = invoke(stub, "work-pool", "delete", "p1", input="n\n")
    assert refused.exit_code == 1
    assert [(r.method, r.path) for r in stub.requests] == [("GET", "/api/deployments")]
    result = invoke(stub, "work-pool", "delete", "p1", "--yes")
    assert result.exit_code == 0, result.output
    (delete,) = stub.sent("DELETE", "/api/work-pools/p1")
    # The server deletes only if the pool still has the deployments the user was shown.
    assert delete.query == {"deployments": ["0"], "cascade": ["false"]}


def test_work_pool_delete_of_a_pool_with_deployments_asks_nothing_without_cascade(
        stub: StubApi) -> None:
    stub.answer("GET", "/api/deployments", (200, [{"flow_name": "f", "name": "d"}]))
    stub.answer("DELETE", "/api/work-pools/p1", (409, {
        "error": "conflict", "details": [],
        "message": "work pool 'p1' has 1 deployment(s) (f/d); ... --cascade"}))
    result = invoke(stub, "work-pool", "delete", "p1", input="y\n")
    assert result.exit_code == 2 and "1 deployment(s) (f/d)" in result.stderr
    assert "Delete work pool" not in result.output  # refused before any question
    (delete,) = stub.sent("DELETE", "/api/work-pools/p1")
    assert delete.query == {"deployments": ["1"], "cascade": ["false"]}


def test_work_queue_commands_send_the_right_changes(stub: StubApi) -> None:
    path = "/api/work-pools/local/queues/fast"
    queue = {"id": "q-1", "pool_id": "p-1", "pool_name": "local", "name": "fast",
             "priority": 1, "created": NOW, "updated": NOW}
    models.WorkQueue.model_validate(queue)
    stub.answer("PATCH", path, (200, queue))
    stub.answer("POST", "/api/work-pools/local/queues", (201, queue))
    assert invoke(stub, "work-queue", "create", "fast", "--pool", "local", "--priority", "1",
                  "--concurrency-limit", "3").exit_code == 0
    assert invoke(stub, "work-queue", "set-concurrency-limit", "fast", "5",
                  "--pool", "local").exit_code == 0
    assert invoke(stub, "work-queue", "clear-concurrency-limit", "fast",
                  "--pool", "local").exit_code == 0
    assert invoke(stub, "work-queue", "pause", "fast", "--pool", "local").exit_code == 0
    assert [r.body for r in stub.requests] == [
        {"name": "fast", "priority": 1, "concurrency_limit": 3},
        {"concurrency_limit": 5}, {"clear_concurrency_limit": True}, {"paused": True}]
    missing_pool = invoke(stub, "work-queue", "inspect", "fast")
    assert missing_pool.exit_code == 2 and "--pool" in missing_pool.output


# ---------------------------------------------------------------------------- start-up cost

HEAVY_MODULES = ("sqlalchemy", "aiohttp", "boto3", "botocore", "httpx", "yaml", "pydantic",
                 "rich.table", "dispatcher.server", "dispatcher.settings", "dispatcher.models",
                 "google.cloud", "azure", "modal")


def test_cli_constants_mirror_the_models_and_settings() -> None:
    from dispatcher.settings import Settings

    assert cli_runs.FINAL_STATES == {state.value for state in models.FINAL_STATES}
    assert MAX_START_AHEAD.total_seconds() == models.MAX_SECONDS
    from dispatcher.api.route_table import LOGS_LIMIT

    assert cli_runs.MAX_TAIL == LOGS_LIMIT.maximum
    assert DEFAULT_API_URL == Settings.model_fields["api_url"].default


def test_importing_the_cli_loads_no_heavy_module() -> None:
    code = ("import json, sys, dispatcher.cli; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True,
                                       capture_output=True, text=True).stdout)
    # A namespace package's .pth (functions-framework's google.cloud) makes an empty module
    # at interpreter start: only what importing the CLI adds counts.
    bare = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sorted(sys.modules)))"],
        cwd=PROJECT, check=True, capture_output=True, text=True).stdout)
    heavy = [m for m in set(loaded) - set(bare)
             if any(m == h or m.startswith(h + ".") for h in HEAVY_MODULES)]
    assert heavy == []


def test_help_is_fast() -> None:
    # The budget is 300 ms. CPU time (user + sys) of the child is measured rather than wall
    # time, so that other processes competing for the test box's cores do not count.
    cpu_seconds = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, "-m", "dispatcher.cli", "--help"], cwd=PROJECT,
                              capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert done.returncode == 0 and "work-pool" in done.stdout
        cpu_seconds.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    assert min(cpu_seconds) < 0.3, cpu_seconds


# ---------------------------------------------------------------------------- fitting a terminal

LONG_RUN_ID = "3f2a1b9c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


_NOW = datetime.now(UTC)


def _later(**delta: float) -> str:
    return (_NOW + timedelta(**delta)).isoformat()


def _listing_answers(stub: StubApi) -> None:
    """Listings with the long names real users have."""
    deployment = "get-repo-info/my-first-deployment-of-the-nightly-repository-report"
    runs = [run_json(state, id=f"{LONG_RUN_ID[:-1]}{i}", deployment_name=deployment,
                     name=f"my-first-deployment-of-the-nightly-report-2026120{i}-010000",
                     pool_name="gpu-batch-processing-europe-west", queue_name="high-priority",
                     scheduled_time=_later(minutes=-125), started_at=_later(minutes=-120),
                     ended_at=ended)
            for i, (state, ended) in enumerate([("COMPLETED", _later(minutes=-118)),
                                                ("RUNNING", None), ("CANCELLING", None)])]
    upcoming = [run_json("SCHEDULED", id=LONG_RUN_ID, deployment_name=deployment,
                         name="my-first-deployment-of-the-nightly-report-20261201-010000",
                         queue_name="high-priority", scheduled_time=_later(hours=5))]
    long_deployment = {**deployment_json("my-first-deployment-of-the-nightly-repository-report",
                                         "get-repo-info"),
                       "pool_name": "gpu-batch-processing-europe-west",
                       "queue_name": "high-priority",
                       "schedules": [{"id": LONG_RUN_ID, "cron": "0 1 * * *",
                                      "timezone": "Europe/Paris", "active": True},
                                     {"id": LONG_RUN_ID, "interval": 3600.0,
                                      "timezone": "UTC", "active": False}]}
    pool = pool_json("gpu-batch-processing-europe-west", concurrency_limit=20,
                     queues=["default", "high-priority", "low-priority-backfill"])
    queue = {"id": "q-1", "pool_id": "p-1", "pool_name": "gpu-batch-processing-europe-west",
             "name": "low-priority-backfill", "priority": 3, "concurrency_limit": None,
             "paused": False, "created": NOW, "updated": NOW, "active_runs": 12}
    stub.answer("GET", "/api/runs", (200, runs))
    stub.answer("GET", "/api/deployments", (200, [long_deployment]))
    stub.answer("GET", "/api/work-pools", (200, [pool]))
    stub.answer("GET", "/api/work-queues", (200, [queue]))
    stub.answer("GET", "/api/work-pools/gpu/preview", (200, upcoming))


def invoke_at(stub: StubApi, width: int, *args: str) -> Any:
    env = {"PUSHPOOL_API_URL": stub.url, "COLUMNS": str(width), "NO_COLOR": "1"}
    return CliRunner().invoke(app, list(args), env=env)


_BOX = re.compile(r"[\s\u2500-\u257f]+")


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", [
    ["run", "ls"], ["deployment", "ls"], ["work-pool", "ls"], ["work-queue", "ls"],
    ["work-pool", "preview", "gpu"],
])
def test_every_listing_fits_the_terminal_without_breaking_a_word(
        stub: StubApi, command: list[str], width: int) -> None:
    _listing_answers(stub)
    wide = invoke_at(stub, 1000, *command)
    assert wide.exit_code == 0, wide.output
    words = set(_BOX.split(wide.stdout))
    narrow = invoke_at(stub, width, *command)
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    # Every word is whole, or cut short with "…": never a piece folded onto another line.
    broken = [token for token in _BOX.split(narrow.stdout) if token and token not in words
              and not (token.endswith("…") and any(w.startswith(token[:-1]) for w in words))]
    assert broken == [], "\n".join(lines)


def test_run_ls_shows_short_ids_relative_times_and_durations(stub: StubApi) -> None:
    _listing_answers(stub)
    result = invoke_at(stub, 80, "run", "ls")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "3f2a1b9c " in out and LONG_RUN_ID not in out
    assert "2 hours ago" in out and "2m 00s" in out
    assert "Started" not in out and "Ended" not in out  # the absolute times are in the JSON
    listed = invoke_at(stub, 80, "run", "ls", "--output", "json")
    assert json.loads(listed.stdout)[0]["id"].startswith(LONG_RUN_ID[:-1])


# ---------------------------------------------------------------------------- run inspect & co


def test_run_inspect_shows_the_exit_code_and_the_result(stub: StubApi) -> None:
    stub.answer("GET", "/api/runs/r-1", (200, run_json(
        "COMPLETED", [("COMPLETED", "completed")], state_message="completed", exit_code=0,
        result={"stars": 4242, "forks": 17}, started_at=NOW, ended_at="2026-01-01T09:01:05Z")))
    result = invoke(stub, "run", "inspect", "r-1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"^Exit code +0 *$", out, re.MULTILINE), out
    assert re.search(r"^Duration +1m 05s *$", out, re.MULTILINE), out
    assert re.search(r"^State message +- *$", out, re.MULTILINE), out  # "completed" adds nothing
    result_block = out.split("\nResult\n", 1)[1]
    assert json.loads(result_block[:result_block.index("}") + 1]) == {"forks": 17,
                                                                      "stars": 4242}


def test_a_state_message_does_not_repeat_the_state(stub: StubApi,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_runs, "POLL_SECONDS", 0.01)
    stub.answer("POST", "/api/deployments/hello/my-deployment/runs", (201, run_json()))
    stub.answer("GET", "/api/runs/r-1", (200, run_json(
        "CANCELLED", [("CANCELLING", "cancellation requested"), ("CANCELLED", "cancelled")],
        state_message="cancelled")))
    stub.answer("GET", "/api/runs/r-1/logs", (200, []))
    result = invoke(stub, "deployment", "run", "hello/my-deployment", "--watch")
    assert result.exit_code == 1, result.output
    assert "finished in state CANCELLED\n" in result.stdout
    assert "is CANCELLED\n" in result.stdout
    assert "cancelled" not in result.stdout.replace("CANCELLED", "")


def test_watch_prints_no_log_line_before_the_run_is_running(
        stub: StubApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_runs, "POLL_SECONDS", 0.01)
    t = "2026-01-01T09:00:0{}Z".format
    pending = [("SCHEDULED", t(0), "created"), ("PENDING", t(1), "claimed")]
    running = [*pending, ("RUNNING", t(3), "running")]
    done = [*running, ("COMPLETED", t(4), "completed")]

    def at(state: str, history: list[tuple[str, str, str]]) -> dict[str, Any]:
        return run_json(state) | {"history": [{"state": s, "timestamp": ts, "message": m}
                                              for s, ts, m in history]}

    stub.answer("POST", "/api/deployments/hello/my-deployment/runs", (201, run_json()))
    stub.answer("GET", "/api/runs/r-1", (200, at("PENDING", pending)),
                (200, at("RUNNING", running)), (200, at("COMPLETED", done)))
    # The job logged at 09:00:02, before the status poll that saw it running.
    early = log_json(1, "fetching the code") | {"timestamp": t(2)}
    stub.answer("GET", "/api/runs/r-1/logs", (200, [early]), (200, []))
    result = invoke(stub, "deployment", "run", "hello/my-deployment", "--watch")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.index("is PENDING") < out.index("is RUNNING") < out.index("fetching the code")
    assert out.index("fetching the code") < out.index("is COMPLETED")


def test_run_logs_head_tail_and_the_stream_column(stub: StubApi) -> None:
    stub.answer("GET", "/api/runs/r-1", (200, run_json("COMPLETED")))
    stub.answer("GET", "/api/runs/r-1/logs",
                (200, [log_json(1, "one"), log_json(2, "two") | {"stream": "stderr"}]))
    head = invoke(stub, "run", "logs", "r-1", "--head", "2")
    assert head.exit_code == 0, head.output
    assert [line.split()[1] for line in head.stdout.splitlines()] == ["stdout", "stderr"]
    tail = invoke(stub, "run", "logs", "r-1", "--tail", "2")
    assert tail.exit_code == 0, tail.output
    sent = [r.query for r in stub.sent("GET", "/api/runs/r-1/logs")]
    assert sent == [{"limit": ["2"]}, {"tail": ["true"], "limit": ["2"]}]
    both = invoke(stub, "run", "logs", "r-1", "--head", "1", "--tail", "1")
    assert both.exit_code == 2 and "--head and --tail" in both.stderr


# ---------------------------------------------------------------------------- start times


def test_a_start_in_the_past_is_said_and_shown_as_past(stub: StubApi) -> None:
    stub.answer("POST", "/api/deployments/hello/my-deployment/runs",
                (201, run_json(scheduled_time="2020-01-01T00:00:00Z")))
    result = invoke(stub, "deployment", "run", "hello/my-deployment",
                    "--start-at", "2020-01-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert "Warning: --start-at 2020-01-01T00:00:00Z is in the past" in result.stderr
    assert "Scheduled start time: 2020-01-01 00:00:00 UTC (" in result.stdout
    assert "years ago)" in result.stdout and "(now)" not in result.stdout


@pytest.mark.parametrize("args", [["--start-at", "9999-12-31"],
                                  ["--start-at", "2040-01-01T00:00:00Z"],
                                  ["--start-in", "4000d"]])
def test_a_start_beyond_ten_years_is_refused(stub: StubApi, args: list[str]) -> None:
    result = invoke(stub, "deployment", "run", "hello/my-deployment", *args)
    assert result.exit_code == 2, result.output
    assert args[0] in result.stderr and "more than ten years ahead" in result.stderr
    assert stub.requests == []


def test_a_number_for_a_string_parameter_suggests_quoting(stub: StubApi) -> None:
    message = "parameters.repo_name: 123 is not of type 'string'"
    stub.answer("POST", "/api/deployments/hello/my-deployment/runs", (422, {
        "error": "invalid_input", "message": message,
        "details": [{"field": "parameters.repo_name", "message": "123 is not of type 'string'",
                     "fix": "pass a value that matches the flow's signature"}]}))
    result = invoke(stub, "deployment", "run", "hello/my-deployment",
                    "--param", "repo_name=123")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {message}")
    assert """--param repo_name='"123"'""" in result.stderr
    # A string value that the flow refuses for another reason gets no quoting hint.
    plain = invoke(stub, "deployment", "run", "hello/my-deployment", "--param", "other=abc")
    assert plain.exit_code == 2 and "quote" not in plain.stderr
