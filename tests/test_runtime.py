"""The runtime (`pushpool execute`) through real processes: a server, a process pool, jobs.

Each deployment runs ``dispatcher.runtime`` as a supervised process that fetches its code
(a local directory or a git repository), runs the flow and reports to the server with its
run token. Faster pieces (tokens, sources, the store's report rules, the reporter giving
up) are tested directly below the end-to-end ones.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
import pytest

from dispatcher import operations, run_tokens, store
from dispatcher.errors import Conflict, Forbidden, Unauthorized
from dispatcher.flows import flow
from dispatcher.models import (
    DeploymentApply,
    RunCreate,
    RunState,
    WorkPoolCreate,
)
from dispatcher.runtime import Outcome, jsonable_result, run_attempts
from dispatcher.runtime import main as runtime_main
from dispatcher.runtime_reporter import Reporter, ReporterSettings
from dispatcher.sources import GitSource, SourceError, fetch_git, git_commands, parse_source, redact
from dispatcher.store import Database
from tests.fakes.http_repo_server import serve_repos
from tests.fakes.pushpool_server import ServerProcess, free_port

T = TypeVar("T")

API_TOKEN = "runtime-tests-api-token"
SECRET_KEY = "runtime-tests-secret-key"
REPO_ROOT = Path(__file__).resolve().parent.parent
PUSHPOOL = str(Path(sys.executable).parent / "pushpool")
FAST_REPORTS = {"PUSHPOOL_REPORT_BATCH_SECONDS": "0.1",
                "PUSHPOOL_REPORT_MAX_BACKOFF_SECONDS": "0.3"}

FLOWS = '''
import os
import pathlib
import signal
import time

from dispatcher import flow
from dispatcher.flows import get_run_logger


@flow(log_prints=True)
def add(a: int, b: int = 2) -> int:
    print(f"adding {a} and {b}")
    get_run_logger().info("logged through the run logger")
    return a + b


@flow
def boom() -> None:
    print("about to fail")
    raise ValueError("boom went the flow")


@flow(timeout_seconds=1)
def slow() -> None:
    print("sleeping")
    time.sleep(60)


@flow(retries=2, retry_delay_seconds=0.1)
def flaky(counter: str) -> int:
    path = pathlib.Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} failed")
    return attempt


@flow
def die() -> None:
    print("about to die")
    os.kill(os.getpid(), signal.SIGKILL)


@flow
def wait_for_file(path: str) -> str:
    print("waiting for", path)
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)
    for i in range(3):
        print(f"after release {i}")
    return "released"


@flow
def show_token() -> str:
    return os.environ["PUSHPOOL_RUN_TOKEN"]
'''


# ---------------------------------------------------------------------------- helpers


def write_flows(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flows.py").write_text(FLOWS)
    return directory


@functools.cache
def flows_module() -> ModuleType:
    """FLOWS imported here too, for the parameter schemas of its flows."""
    directory = Path(tempfile.mkdtemp(prefix="pushpool-test-flows-"))
    spec = importlib.util.spec_from_file_location("runtime_test_flows",
                                                  write_flows(directory) / "flows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    return done.stdout.strip()


def git_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch", "main", cwd=path)
    for name, text in files.items():
        (path / name).write_text(text)
    git("add", ".", cwd=path)
    git("commit", "--quiet", "-m", "flows", cwd=path)
    return path


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def deploy(server: ServerProcess, name: str, entrypoint: str, source: str,
           job_env: dict[str, str] | None = None, **extra: Any) -> None:
    """Create a deployment through the API with the flow's parameter schema."""
    target = getattr(flows_module(), entrypoint.split(":")[1])
    body: dict[str, Any] = {
        "name": name, "flow_name": target.name, "pool_name": "local",
        "entrypoint": entrypoint, "source": source,
        "parameter_schema": target.parameter_schema(),
        "job_variables": {"env": {**FAST_REPORTS, **(job_env or {})}}, **extra}
    response = httpx.put(f"{server.url}/api/deployments", json=body, headers=auth(API_TOKEN))
    assert response.status_code in (200, 201), response.text


def start_run(server: ServerProcess, deployment: str, parameters: dict[str, Any] | None = None,
              job_variables: dict[str, Any] | None = None) -> str:
    response = httpx.post(f"{server.url}/api/deployments/{deployment}/runs",
                          json={"parameters": parameters or {},
                                "job_variables": job_variables or {}},
                          headers=auth(API_TOKEN))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def get_run(server: ServerProcess, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/runs/{run_id}", headers=auth(API_TOKEN))
    assert response.status_code == 200, response.text
    return dict(response.json())


def logs_of(server: ServerProcess, run_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/api/runs/{run_id}/logs", headers=auth(API_TOKEN))
    assert response.status_code == 200, response.text
    return list(response.json())


def messages(server: ServerProcess, run_id: str) -> list[str]:
    return [entry["message"] for entry in logs_of(server, run_id)]


def wait_until(condition: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def final_run(server: ServerProcess, run_id: str, within: float = 30.0) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run = get_run(server, run_id)
        return run if RunState(run["state"]).is_final else None

    return wait_until(ended, timeout=within, interval=0.1, what=f"run {run_id} to end")


def exit_record(run: dict[str, Any]) -> dict[str, Any]:
    """The process provider's record of how the job's process ended."""
    path = Path(run["infra_id"]) / "exit.json"
    wait_until(path.exists, timeout=15, what=f"{path}")
    return dict(json.loads(path.read_text()))


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: API token and secret key set, a process pool 'local'."""
    home = tmp_path_factory.mktemp("runtime-server")
    proc = ServerProcess(home, env={"PUSHPOOL_API_TOKEN": API_TOKEN,
                                    "PUSHPOOL_SECRET_KEY": SECRET_KEY})
    proc.start()
    try:
        response = httpx.post(f"{proc.url}/api/work-pools", headers=auth(API_TOKEN),
                              json={"name": "local", "type": "process"})
        assert response.status_code == 201, response.text
        flows_dir = write_flows(home / "flows")
        for name in ("add", "boom", "slow", "flaky", "die", "wait_for_file", "show_token"):
            deploy(proc, "test", f"flows.py:{name}", str(flows_dir))
        yield proc
    finally:
        proc.stop()


# ---------------------------------------------------------------------------- the journey


@pytest.mark.slow
def test_repo_info_journey_from_git_with_cli(server: ServerProcess, tmp_path: Path
                                                   ) -> None:
    """examples/repo_info.py deployed from a git repository, run and read with the CLI."""
    repo = git_repo(tmp_path / "repo",
                    {"repo_info.py": (REPO_ROOT / "examples" / "repo_info.py").read_text()})
    env = {**os.environ, **server.client_env(), "NO_COLOR": "1", "COLUMNS": "120"}
    deployed = subprocess.run([sys.executable, "repo_info.py", f"file://{repo}"], cwd=repo,
                              env=env, capture_output=True, text=True, timeout=60, check=False)
    assert deployed.returncode == 0, deployed.stderr
    out = deployed.stdout
    assert "Successfully created/updated all deployments!" in out
    assert "Deployments" in out and "get-repo-info/my-first-deployment" in out
    assert "applied" in out and "created in work pool 'local'" in out
    assert "To execute flow runs from these deployments, run:" in out
    assert "$ pushpool deployment run 'get-repo-info/my-first-deployment'" in out

    stats = {"acme/widgets": {"full_name": "acme/widgets", "stargazers_count": 4242,
                              "forks_count": 17}}
    with serve_repos(stats) as github:
        started = subprocess.run(
            [PUSHPOOL, "deployment", "run", "get-repo-info/my-first-deployment",
             "--param", "repo_name=acme/widgets",
             "--job-variable", f"env.PUSHPOOL_EXAMPLE_GITHUB_API={github.url}"],
            env=env, capture_output=True, text=True, timeout=60, check=False)
        assert started.returncode == 0, started.stderr
        match = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout)
        assert match, started.stdout
        run = final_run(server, match.group(1))
        assert [path for path, _ in github.requests] == ["/repos/acme/widgets"]
    assert run["state"] == "COMPLETED", run
    assert run["result"] == {"stars": 4242, "forks": 17}
    assert (exit_record(run))["exit_code"] == 0
    assert run["exit_code"] == 0  # reported with the final state, which ends the watching

    inspected = subprocess.run([PUSHPOOL, "run", "inspect", run["id"][:8]], env=env,
                               capture_output=True, text=True, timeout=60, check=False)
    assert inspected.returncode == 0, inspected.stderr
    assert re.search(r"^Exit code +0 *$", inspected.stdout, re.MULTILINE), inspected.stdout
    assert '"stars": 4242' in inspected.stdout.split("Result", 1)[1]

    shown = subprocess.run([PUSHPOOL, "run", "logs", run["id"]], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any("acme/widgets repository statistics" in line for line in lines)
    assert any(line.endswith("Stars 🌠 : 4242") for line in lines)
    assert any(line.endswith("Forks 🍴 : 17") for line in lines)
    assert lines[-1].endswith("Finished in state COMPLETED")

    deployment = httpx.get(f"{server.url}/api/deployments/get-repo-info/my-first-deployment",
                           headers=auth(API_TOKEN)).json()
    assert deployment["source"] == f"file://{repo}"
    assert deployment["entrypoint"] == "repo_info.py:get_repo_info"
    assert [s["cron"] for s in deployment["schedules"]] == ["0 1 * * *"]
    assert deployment["parameter_schema"]["properties"]["repo_name"]["type"] == "string"


# ---------------------------------------------------------------------------- outcomes


@pytest.mark.slow
def test_completed_flow_reports_result_and_run_logger_lines(server: ServerProcess
                                                                  ) -> None:
    run = final_run(server, start_run(server, "add/test", {"a": 40}))
    assert run["state"] == "COMPLETED", run
    assert run["result"] == 42
    assert [h["state"] for h in run["history"]][-2:] == ["RUNNING", "COMPLETED"]
    entries = logs_of(server, run["id"])
    shown = [(e["stream"], e["message"]) for e in entries]
    assert ("stdout", "adding 40 and 2") in shown
    assert ("log", "INFO | logged through the run logger") in shown
    assert sum("adding 40 and 2" in m for _, m in shown) == 1  # log_prints: not twice


@pytest.mark.slow
def test_flow_that_raises_fails_with_traceback_and_nonzero_exit(server: ServerProcess
                                                                      ) -> None:
    run = final_run(server, start_run(server, "boom/test"))
    assert run["state"] == "FAILED"
    assert run["state_message"] == "the flow failed: ValueError: boom went the flow"
    assert run["result"] is None
    lines = messages(server, run["id"])
    assert "about to fail" in lines
    assert "Traceback (most recent call last):" in lines
    assert any('flows.py", line' in line and "in boom" in line for line in lines)
    assert not any("dispatcher/runtime.py" in line for line in lines)  # user frames only
    assert lines[-1] == ("Finished in state FAILED: the flow failed: "
                         "ValueError: boom went the flow")
    assert (exit_record(run))["exit_code"] == 1
    assert run["exit_code"] == 1


@pytest.mark.slow
def test_flow_over_its_timeout_fails(server: ServerProcess) -> None:
    run = final_run(server, start_run(server, "slow/test"))
    assert run["state"] == "FAILED"
    assert run["state_message"] == "the flow failed: timed out after 1s"
    assert "sleeping" in messages(server, run["id"])
    assert (exit_record(run))["exit_code"] == 1


@pytest.mark.slow
def test_retries_run_the_flow_again_until_it_completes(server: ServerProcess,
                                                             tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    run = final_run(server, start_run(server, "flaky/test", {"counter": str(counter)}))
    assert run["state"] == "COMPLETED", run
    assert run["result"] == 3 and counter.read_text() == "3"
    lines = messages(server, run["id"])
    assert "Running flow 'flaky' (attempt 1 of 3)" in lines
    assert "Attempt 1 failed (RuntimeError: attempt 1 failed); retrying in 0.1s" in lines
    assert "Attempt 2 failed (RuntimeError: attempt 2 failed); retrying in 0.1s" in lines
    assert "Running flow 'flaky' (attempt 3 of 3)" in lines


@pytest.mark.slow
def test_retries_exhausted_fail_with_the_last_error(server: ServerProcess,
                                                          tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    counter.write_text("-5")  # every attempt of the three fails
    run = final_run(server, start_run(server, "flaky/test", {"counter": str(counter)}))
    assert run["state"] == "FAILED"
    assert run["state_message"] == "the flow failed: RuntimeError: attempt -2 failed"
    assert (exit_record(run))["exit_code"] == 1


@pytest.mark.slow
def test_bad_parameters_are_refused_when_the_run_is_created(server: ServerProcess
                                                                  ) -> None:
    cases = [({"a": "forty"}, "parameters.a"), ({}, "parameters.a"),
             ({"a": 1, "c": 3}, "parameters")]
    for parameters, field in cases:
        response = httpx.post(f"{server.url}/api/deployments/add/test/runs",
                              json={"parameters": parameters}, headers=auth(API_TOKEN))
        assert response.status_code == 422, (parameters, response.text)
        body = response.json()
        assert body["details"][0]["field"] == field, (parameters, body)
    assert "'c' was unexpected" in body["message"]


@pytest.mark.slow
def test_runtime_killed_before_reporting_is_crashed(server: ServerProcess) -> None:
    run = final_run(server, start_run(server, "die/test"))
    assert run["state"] == "CRASHED"
    assert "SIGKILL" in run["state_message"]


@pytest.mark.slow
def test_cancelled_run_stops_without_a_failed_report(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    run_id = start_run(server, "wait-for-file/test", {"path": str(tmp_path / "never")})
    wait_until(lambda: "waiting for " + str(tmp_path / "never") in messages(server, run_id),
                   timeout=30, what="the flow to start")
    response = httpx.post(f"{server.url}/api/runs/{run_id}/cancel", headers=auth(API_TOKEN))
    assert response.status_code == 200
    run = final_run(server, run_id)
    assert run["state"] == "CANCELLED", run
    assert "FAILED" not in [h["state"] for h in run["history"]]


@pytest.mark.slow
def test_missing_source_directory_fails_before_running(server: ServerProcess,
                                                             tmp_path: Path) -> None:
    deploy(server, "gone", "flows.py:add", str(tmp_path / "nowhere"))
    run = final_run(server, start_run(server, "add/gone", {"a": 1}))
    assert run["state"] == "FAILED"
    assert "does not exist here" in run["state_message"]
    assert "flow 'add' started" not in [h["message"] for h in run["history"]]
    assert not any(line.startswith("Running flow") for line in messages(server, run["id"]))


# ---------------------------------------------------------------------------- run tokens


@pytest.mark.slow
def test_run_token_works_for_its_own_run_only(server: ServerProcess) -> None:
    token_run = final_run(server, start_run(server, "show-token/test"))
    token = token_run["result"]
    assert token_run["state"] == "COMPLETED" and run_tokens.looks_like_run_token(token)
    other = final_run(server, start_run(server, "add/test", {"a": 1}))

    line = [{"timestamp": "2026-01-01T00:00:00Z", "stream": "stdout", "message": "hi"}]
    own = httpx.post(f"{server.url}/api/runs/{token_run['id']}/logs", json=line,
                     headers=auth(token))
    assert own.status_code == 200 and own.json() == {"accepted": 1}
    for path, body in ((f"/api/runs/{other['id']}/logs", line),
                       (f"/api/runs/{other['id']}/state", {"state": "FAILED"})):
        response = httpx.post(server.url + path, json=body, headers=auth(token))
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "forbidden"
    # The run token opens the runtime's routes only, not the rest of the API.
    assert httpx.get(f"{server.url}/api/runs/{token_run['id']}/logs",
                     headers=auth(token)).status_code == 401
    assert httpx.get(f"{server.url}/api/runs", headers=auth(token)).status_code == 401

    key = run_tokens.key_from_secret(SECRET_KEY)
    expired = run_tokens.mint(key, other["id"], int(time.time()) - 5)
    forged = run_tokens.mint(b"not the server's key", other["id"], int(time.time()) + 600)
    for bad, says in ((expired, "expired"), (forged, "not valid"), ("pprt1.x.1.y", "not valid"),
                      ("garbage", "not valid")):
        response = httpx.post(f"{server.url}/api/runs/{other['id']}/logs", json=line,
                              headers=auth(bad))
        assert response.status_code == 401, (bad, response.text)
        assert says in response.json()["message"]
        assert bad not in response.text
    missing = httpx.post(f"{server.url}/api/runs/{other['id']}/logs", json=line)
    assert missing.status_code == 401
    # The API token still works on these routes.
    assert httpx.post(f"{server.url}/api/runs/{other['id']}/logs", json=line,
                      headers=auth(API_TOKEN)).status_code == 200


# ---------------------------------------------------------------------------- the API goes down


@pytest.mark.slow
def test_api_down_during_the_run_then_logs_and_state_arrive(tmp_path: Path) -> None:
    """The server stops mid-run; the flow goes on; its reports arrive once it is back."""
    server = ServerProcess(tmp_path / "home")  # no secret key: the key lives in the store
    server.start()
    try:
        httpx.post(f"{server.url}/api/work-pools", headers=auth(API_TOKEN),
                   json={"name": "local", "type": "process"}).raise_for_status()
        deploy(server, "down", "flows.py:wait_for_file", str(write_flows(tmp_path / "flows")))
        release = tmp_path / "release"
        run_id = start_run(server, "wait-for-file/down", {"path": str(release)})
        wait_until(lambda: f"waiting for {release}" in messages(server, run_id),
                       timeout=30, what="the flow to start")
        run_dir = Path(get_run(server, run_id)["infra_id"])
        server.stop()

        release.touch()
        job_output = run_dir / "logs.jsonl"
        wait_until(lambda: job_output.exists() and "cannot reach the API" in
                       job_output.read_text(), timeout=30, what="the runtime to notice")
        assert not (run_dir / "exit.json").exists()  # it waits for the API, holding its logs

        server.start()
        run = final_run(server, run_id)
        assert run["state"] == "COMPLETED", run
        assert run["result"] == "released"
        lines = messages(server, run_id)
        after = [line for line in lines if line.startswith("after release")]
        assert after == ["after release 0", "after release 1", "after release 2"]
        assert lines.index("after release 2") < lines.index("Finished in state COMPLETED")
        assert (exit_record(run))["exit_code"] == 0
    finally:
        server.stop()


# ---------------------------------------------------------------------------- private git


@pytest.mark.slow
def test_private_git_repository_with_a_credential(server: ServerProcess,
                                                        tmp_path: Path) -> None:
    secret = "s3cr3t-git-token-0123456789"
    work = git_repo(tmp_path / "work", {"flows.py": FLOWS})
    root = tmp_path / "served"
    root.mkdir()
    git("clone", "--quiet", "--bare", str(work), str(root / "private.git"), cwd=tmp_path)
    with serve_repos(git_root=root, git_password=secret) as host:
        source = GitSource(f"{host.url}/git/private.git", branch="main",
                           credential_env="REPO_TOKEN").to_string()
        deploy(server, "private", "flows.py:add", source, job_env={"REPO_TOKEN": secret})
        run = final_run(server, start_run(server, "add/private", {"a": 1}))
        assert run["state"] == "COMPLETED", run
        sent = [base64.b64decode(a[6:]).decode() for _, a in host.requests if a]
        assert f"x-access-token:{secret}" in sent
        assert all(secret not in path for path, _ in host.requests)

        wrong = "wrong-token-9876543210"
        failed = final_run(server, start_run(server, "add/private", {"a": 1},
                                                   {"env": {"REPO_TOKEN": wrong}}))
    assert failed["state"] == "FAILED"
    assert failed["state_message"].startswith(f"could not fetch {host.url}/git/private.git "
                                              "at main: fatal: Authentication failed")
    source_stored = httpx.get(f"{server.url}/api/deployments/add/private",
                              headers=auth(API_TOKEN)).json()["source"]
    assert source_stored.endswith("credential_env=REPO_TOKEN") and secret not in source_stored
    for checked in (run, failed):
        # What the runtime and the server said about the run (its job variables hold the
        # token because this test put it there).
        said = json.dumps([checked["history"], checked["state_message"],
                           logs_of(server, checked["id"])])
        assert secret not in said and wrong not in said


def test_git_commands_never_carry_the_credential(tmp_path: Path) -> None:
    source = GitSource("https://git.example.com/acme/flows.git", tag="v1",
                       credential_env="TOKEN")
    for argv in git_commands(source, tmp_path / "dest"):
        assert not any("TOKEN" in part or "@" in part for part in argv), argv
    assert git_commands(source, tmp_path / "d")[0][-4:] == [
        "v1", "--", "https://git.example.com/acme/flows.git", str(tmp_path / "d")]


def test_fetch_a_commit_and_a_tag_from_a_local_repository(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo", {"a.txt": "first"})
    first = git("rev-parse", "HEAD", cwd=repo)
    git("tag", "v1", cwd=repo)
    (repo / "a.txt").write_text("second")
    git("commit", "--quiet", "-am", "second", cwd=repo)
    fetch_git(GitSource(f"file://{repo}", commit=first), tmp_path / "at-commit")
    assert (tmp_path / "at-commit" / "a.txt").read_text() == "first"
    fetch_git(GitSource(f"file://{repo}", tag="v1"), tmp_path / "at-tag")
    assert (tmp_path / "at-tag" / "a.txt").read_text() == "first"
    fetch_git(GitSource(f"file://{repo}"), tmp_path / "head")
    assert (tmp_path / "head" / "a.txt").read_text() == "second"
    with pytest.raises(SourceError, match=r"could not fetch file://.* at nope"):
        fetch_git(GitSource(f"file://{repo}", branch="nope"), tmp_path / "missing")
    with pytest.raises(SourceError, match=r"needs a token in \$NOT_SET"):
        fetch_git(GitSource(f"file://{repo}", credential_env="NOT_SET"), tmp_path / "x",
                  environ={"PATH": os.environ["PATH"]})


def test_source_strings_round_trip_and_are_checked() -> None:
    source = GitSource("https://h/r.git", branch="dev", credential_env="TOK", username="bot")
    assert parse_source(source.to_string()) == source
    assert parse_source("/srv/flows") == Path("/srv/flows")
    with pytest.raises(SourceError, match="unknown source setting 'brnch'"):
        parse_source("https://h/r.git#brnch=dev")
    with pytest.raises(SourceError, match="at most one of branch, tag or commit"):
        GitSource("https://h/r.git", branch="a", tag="b")
    assert redact("fatal: https://user:tok@h/r.git failed tok", "tok") == \
        "fatal: https://***@h/r.git failed ***"


# ---------------------------------------------------------------------------- pieces


def test_run_tokens_sign_one_run_until_expiry() -> None:
    key = run_tokens.key_from_secret("s")
    token = run_tokens.mint(key, "run-a", 1000)
    run_tokens.verify(key, token, "run-a", now=999)
    with pytest.raises(Forbidden):
        run_tokens.verify(key, token, "run-b", now=999)
    with pytest.raises(Unauthorized, match="expired"):
        run_tokens.verify(key, token, "run-a", now=1001)
    with pytest.raises(Unauthorized, match="not valid"):
        run_tokens.verify(run_tokens.key_from_secret("other"), token, "run-a", now=999)
    tampered = token.replace(".1000.", ".9999.")
    with pytest.raises(Unauthorized, match="not valid"):
        run_tokens.verify(key, tampered, "run-a", now=999)
    assert run_tokens.expiry_for(60, now=100) == 100 + 60 + run_tokens.MARGIN_SECONDS
    assert run_tokens.expiry_for(None, now=0) == (run_tokens.DEFAULT_LIFETIME_SECONDS
                                                  + run_tokens.MARGIN_SECONDS)


@pytest.mark.postgres
async def test_stored_signing_key_is_made_once_and_shared(db: Database) -> None:
    first = await store.run_token_key(db)
    assert await store.run_token_key(db) == first
    assert await store.run_token_key(db, "configured") == run_tokens.key_from_secret(
        "configured")


@pytest.mark.postgres
async def test_state_reports_are_idempotent_and_refused_after_the_end(db: Database) -> None:
    await operations.pools.create_pool(db, WorkPoolCreate(name="p", type="process"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="p", entrypoint="f.py:f"))
    run, _ = await operations.runs.create_run(db, "f/d", RunCreate())
    with pytest.raises(Conflict, match="SCHEDULED; it must not start"):
        await store.report_run_state(db, run.id, RunState.RUNNING)
    await store.set_run_state(db, run.id, RunState.PENDING, "claimed")
    done = await store.report_run_state(db, run.id, RunState.COMPLETED, "completed", {"x": 1})
    assert done.state is RunState.COMPLETED and done.result == {"x": 1}
    assert done.exit_code is None
    assert [h.state for h in done.history][-2:] == [RunState.RUNNING, RunState.COMPLETED]
    assert done.history[-2].message == "running"  # the wording of every RUNNING record
    again = await store.report_run_state(db, run.id, RunState.COMPLETED, "completed", {"x": 1},
                                         exit_code=0)
    assert len(again.history) == len(done.history)  # a retried report changes nothing...
    assert again.exit_code == 0  # ...but fills in what the first one lacked
    with pytest.raises(Conflict, match="already ended COMPLETED"):
        await store.report_run_state(db, run.id, RunState.FAILED, "late")


def test_reporter_gives_up_on_an_unreachable_api_and_keeps_the_lines() -> None:
    diagnostics = io.StringIO()
    reporter = Reporter(f"http://127.0.0.1:{free_port()}", "run-1", "token",
                        ReporterSettings(batch_seconds=0.0, max_backoff_seconds=0.05,
                                         give_up_seconds=0.3), diagnostics=diagnostics)
    reporter.log("stdout", "first line")
    answer = reporter.report_state("COMPLETED", "completed", 1, wait=30)
    assert not answer.answered
    reporter.log("stdout", "after giving up")
    reporter.close(timeout=5)
    text = diagnostics.getvalue()
    assert "cannot reach the API" in text and "gave up on the API" in text
    assert text.index("first line") < text.index("after giving up")
    assert "token" not in text.replace("log lines", "")



def test_run_attempts_in_process_time_out_sync_and_async_flows() -> None:
    reporter = Reporter(f"http://127.0.0.1:{free_port()}", "run-1", None,
                        ReporterSettings(give_up_seconds=0.1, max_backoff_seconds=0.01),
                        diagnostics=io.StringIO())

    @flow(timeout_seconds=0.2)
    def sync_sleep() -> None:
        time.sleep(5)

    @flow(timeout_seconds=0.2)
    async def async_sleep() -> None:
        await asyncio.sleep(5)

    @flow(timeout_seconds=5)
    async def async_answer(x: int) -> dict[str, object]:
        await asyncio.sleep(0)
        return {"x": x, "when": datetime(2026, 1, 1, tzinfo=UTC)}

    said: list[str] = []
    try:
        for target in (sync_sleep, async_sleep):
            started = time.monotonic()
            outcome = run_attempts(target, {}, reporter, said.append)
            assert outcome == Outcome("FAILED", "the flow failed: timed out after 0.2s")
            assert time.monotonic() - started < 3
        assert run_attempts(async_answer, {"x": 1}, reporter, said.append) == Outcome(
            "COMPLETED", "completed", {"x": 1, "when": "2026-01-01T00:00:00Z"})
    finally:
        reporter.close(timeout=1)
    assert said == ["Running flow 'sync-sleep'", "Running flow 'async-sleep'",
                    "Running flow 'async-answer'"]


def test_results_that_json_cannot_hold() -> None:
    assert jsonable_result(object())[1] == "The result (object) is not JSON; keeping its repr()"
    assert jsonable_result("x" * 300_000) == (
        None, "The result is too large to keep (300002 bytes of JSON)")


def test_execute_outside_a_job_says_what_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("PUSHPOOL_RUN_ID", "PUSHPOOL_API_URL", "PUSHPOOL_ENTRYPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert runtime_main([]) == 2
    assert "PUSHPOOL_RUN_ID, PUSHPOOL_API_URL, PUSHPOOL_ENTRYPOINT not set" in \
        capsys.readouterr().err
    monkeypatch.setenv("PUSHPOOL_RUN_ID", "r")
    monkeypatch.setenv("PUSHPOOL_API_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("PUSHPOOL_ENTRYPOINT", "f.py:f")
    monkeypatch.setenv("PUSHPOOL_PARAMETERS", "[1]")
    assert runtime_main([]) == 2
    assert "PUSHPOOL_PARAMETERS must be a JSON object" in capsys.readouterr().err
