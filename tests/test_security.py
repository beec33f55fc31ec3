"""Security: the API fuzzed from its own OpenAPI document, auth, and secrets kept secret.

- Schemathesis generates requests for every operation of /api/openapi.json (examples, the
  coverage phase's edge cases and methods, and 15 fuzzed ones per operation, derandomised
  with a fixed seed) for two live servers over one SQLite store, each from the document it
  serves: one without PUSHPOOL_API_TOKEN and one with it (and the token sent). The store is
  seeded with a pool, a deployment and a run, so path parameters also name real objects.
  Every check is on: no answer may be a 5xx, every answer (status, headers, Allow, body)
  must match the document, bad input must be refused and good input accepted, undocumented
  methods answer 405, and a request without the credential its operation requires (or
  with a wrong one) is refused. An explicit pass over the route table checks the last
  point for every route, with nothing changed.
- Secrets: a real server process with its API token, a run whose env and repository
  credential hold marker values, the CLI against it; no log line, API answer, CLI output,
  error message or process argv holds a marker, while the job gets the real values.
- Start-up failures (port in use, read-only or locked store, bad URL or setting): one
  ``Error:`` line, a non-zero exit, no traceback, no secret (nor a generated key) printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from dispatcher import redaction, store
from dispatcher.api import create_app
from dispatcher.api.openapi import build_document
from dispatcher.api.route_table import ROUTES
from dispatcher.crypto import is_sealed
from dispatcher.sealing import open_json
from dispatcher.settings import Settings
from dispatcher.store.db import Database
from tests.conftest import PG_ADMIN_URL
from tests.fakes.http_repo_server import serve_repos
from tests.fakes.pushpool_server import ServerProcess

TOKEN = "fuzz-token-7d1c"
MAX_EXAMPLES = 15
SEED = 20250601
DEADLINE_SECONDS = 15.0


# ---------------------------------------------------------------------------- live servers

# Two API apps over one SQLite store, without an engine (nothing fuzzed is ever run): one
# needs no token, the other has PUSHPOOL_API_TOKEN set. Sharing the store lets one generated
# request go to both and name the same seeded objects. A process of its own, so that the
# server works on one core while Hypothesis generates on the other.
SERVE_BOTH = """
import asyncio, logging, sys
from aiohttp import web
from pydantic import SecretStr
from dispatcher.api import create_app
from dispatcher.settings import Settings
from dispatcher.store.db import Database

async def main(home, token):
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    db = await Database.connect(f"sqlite+aiosqlite:///{home}/store.db")
    ports = []
    for api_token in (None, SecretStr(token)):
        runner = web.AppRunner(create_app(db, None, Settings(home=home, api_token=api_token)))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ports.append(runner.addresses[0][1])
    print(*ports, flush=True)
    await asyncio.Event().wait()  # until the test terminates this process

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@dataclass
class Servers:
    open_url: str
    locked_url: str
    log: Path  # the servers' log (stderr)


@contextlib.contextmanager
def serve_both(home: Path) -> Iterator[Servers]:
    log = home / "server.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", SERVE_BOTH, str(home), TOKEN],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE_SECONDS)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"the API did not start: {log.read_text()[-3000:]}")
        open_port, locked_port = line.split()
        yield Servers(f"http://127.0.0.1:{open_port}", f"http://127.0.0.1:{locked_port}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def seed(url: str, token: str | None) -> dict[str, str]:
    """A pool, a deployment and a run (created if missing): real targets for path params."""
    with httpx.Client(base_url=url, headers=auth_headers(token), timeout=10) as client:
        if client.get("/api/work-pools/seed-pool").status_code == 404:
            client.post("/api/work-pools",
                        json={"name": "seed-pool", "type": "process"}).raise_for_status()
        client.put("/api/deployments", json={
            "name": "seed-dep", "flow_name": "seed-flow", "pool_name": "seed-pool",
            "command": ["python", "-c", "print(1)"]}).raise_for_status()
        runs = client.get("/api/runs", params={"deployment": "seed-flow/seed-dep"}).json()
        if not runs:
            runs = [client.post("/api/deployments/seed-flow/seed-dep/runs",
                                json={}).raise_for_status().json()]
        deployment = client.get("/api/deployments/seed-flow/seed-dep").json()
        if client.get("/api/webhooks/seed-hook").status_code == 404:
            client.post("/api/webhooks", json={"name": "seed-hook",
                                               "deployment": "seed-flow/seed-dep"}
                        ).raise_for_status()
        hook = client.post("/api/webhooks/seed-hook/enable").raise_for_status().json()
    return {"pool": "seed-pool", "queue": "default", "flow": "seed-flow", "name": "seed-dep",
            "id": runs[0]["id"], "deployment_id": deployment["id"], "type": "process",
            "provider": "ecs", "webhook": "seed-hook",
            "slug": hook["path"].removeprefix("/hooks/")}


# ---------------------------------------------------------------------------- fuzzing

# Operations whose bodies are also checked against things JSON Schema cannot say (a pool
# type this server knows, a pool that exists, a valid cron, job variables against the pool's
# own schema): for them a schema-valid request may still be a 422.
SEMANTIC_422 = ["get_base_job_template", "create_pool", "update_pool", "apply_deployment",
                "create_run", "webhook", "create_webhook", "provision_options",
                "provision_plan"]


def fuzz_config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True,
                       "database": "none",
                       # The token goes in explicitly; ignored_auth then probes without it.
                       "with-security-parameters": False},
        "phases": {"stateful": {"enabled": False}},
        # A request the document forbids may also be refused as too large.
        "checks": {"negative_data_rejection": {
            "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 415, 422]}},
        "operations": [{
            "include-operation-id": SEMANTIC_422,
            "checks": {"positive_data_acceptance": {
                "expected-statuses": ["2xx", 401, 403, 404, 409, 422]}}}],
    })


# Each server's own document: the API token is required only where it is set.
OPEN_SCHEMA = schemathesis.openapi.from_dict(build_document(ROUTES, api_token=False),
                                             config=fuzz_config())
LOCKED_SCHEMA = schemathesis.openapi.from_dict(build_document(ROUTES, api_token=True),
                                               config=fuzz_config())
# The seeded objects' names, filled by the fixture before any case is drawn.
REAL: dict[str, str] = {}


def real_objects(case: Any) -> Any:
    """Half of the positive cases name the seeded pool, deployment and run instead of noise."""
    if not case.path_parameters or (case.meta is not None
                                    and case.meta.is_negative_at(ParameterLocation.PATH)):
        return st.just(case)

    def name_real(use: bool) -> Any:
        if use and REAL:
            by_id = "/deployments/id/" in case.operation.path
            case.path_parameters = {
                name: REAL["deployment_id" if by_id and name == "id" else name]
                for name in case.path_parameters}
        return case

    return st.booleans().map(name_real)


def before_generate_case(context: Any, strategy: Any) -> Any:
    return strategy.flatmap(real_objects)


OPEN_SCHEMA.hook(before_generate_case)
LOCKED_SCHEMA.hook(before_generate_case)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with serve_both(tmp_path_factory.mktemp("fuzz")) as both:
        yield both


@pytest.fixture
def seeded(servers: Servers) -> None:
    """Re-made before each operation: an earlier one may have deleted or cancelled them."""
    REAL.update(seed(servers.open_url, None))


@OPEN_SCHEMA.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # once per operation
def test_fuzzed_requests_get_documented_answers_without_a_token(
        case: Any, servers: Servers, seeded: None) -> None:
    """Every check, against the server without an API token."""
    case.call_and_validate(base_url=servers.open_url)


@LOCKED_SCHEMA.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # once per operation
def test_fuzzed_requests_get_documented_answers_with_the_token(
        case: Any, servers: Servers, seeded: None) -> None:
    """Every check, against the server with one: the same request without the token (or
    with a wrong one) is refused."""
    case.call_and_validate(base_url=servers.locked_url, headers=auth_headers(TOKEN))


def test_the_fuzzed_document_is_the_one_served(servers: Servers) -> None:
    for url, api_token in ((servers.open_url, False), (servers.locked_url, True)):
        served = httpx.get(f"{url}/api/openapi.json", headers=auth_headers(TOKEN), timeout=10)
        assert served.json() == json.loads(json.dumps(build_document(ROUTES,
                                                                     api_token=api_token)))


def test_the_fuzzed_servers_logged_no_error(servers: Servers) -> None:
    """Run after the fuzzing: nothing went wrong that the answers could have hidden."""
    problems = [line for line in servers.log.read_text().splitlines()
                if line.startswith(("ERROR", "CRITICAL", "Traceback"))]
    assert problems == []


# ---------------------------------------------------------------------------- auth


def snapshot(url: str) -> list[Any]:
    """What is stored; without display_state, which turns LATE as time passes."""
    with httpx.Client(base_url=url, headers=auth_headers(TOKEN), timeout=10) as client:
        pools, queues, deployments, runs = (client.get(path).raise_for_status().json()
                                            for path in ("/api/work-pools", "/api/work-queues",
                                                         "/api/deployments",
                                                         "/api/runs?limit=1000"))
    return [pools, queues, deployments,
            [{k: v for k, v in run.items() if k != "display_state"} for run in runs]]


def test_every_route_refuses_anonymous_and_wrong_token_calls(servers: Servers) -> None:
    """With PUSHPOOL_API_TOKEN set, every route but the public ones answers 401 without the
    token or with a wrong one (the provider-events and webhook-delivery routes, public to
    the API token, refuse without their own secret), whatever the body, and changes
    nothing."""
    real = seed(servers.open_url, None)
    before = snapshot(servers.locked_url)
    checked = 0
    with httpx.Client(base_url=servers.locked_url, timeout=10) as client:
        for route in ROUTES:
            path = route.path.format(**{**real, "id": real["deployment_id"]}
                                     if "/deployments/id/" in route.path else real)
            body = {"name": "x", "state": "RUNNING"} if route.body is not None else None
            for headers in ({}, auth_headers("not-the-token"), {"Authorization": "Basic eDp5"}):
                response = client.request(route.method, path, headers=headers, json=body)
                if route.public and not (route.events_secret or route.signed_delivery):
                    assert response.status_code == 200, (route.method, path)
                    continue
                expected = {401, 403} if route.events_secret else {401}
                assert response.status_code in expected, (route.method, path, response.text)
                assert response.json()["error"] in ("unauthorized", "forbidden")
                assert TOKEN not in response.text
                checked += 1
    assert checked >= 3 * (len(ROUTES) - 1)
    assert snapshot(servers.locked_url) == before


# ---------------------------------------------------------------------------- secrets

def test_redaction_hides_secret_env_values_and_url_credentials_only() -> None:
    shown = redaction.redact_json({
        "env": {"API_KEY": "k", "db_password": "p", "PATH": "/bin", "AWS_SESSION_TOKEN": "t",
                "DATABASE_URL": "postgresql://app:p%40ss@db/app", "TOKEN_REF": "{{ token }}",
                "NESTED": {"PRIVATE_KEY": "pk"}},
        "variables": {"properties": {"env": {"type": "object", "default": {"MY_SECRET": "s"}},
                                     "api_key": {"type": "string", "default": "shown"}}},
        "containerOverrides": [{"environment": [{"name": "GH_TOKEN", "value": "gh"},
                                                {"name": "MODE", "value": "debug"}]}],
        "kms_key_id": "arn:aws:kms:key/1", "image": "https://u:pw@registry/img"})
    assert shown == {
        "env": {"API_KEY": "***", "db_password": "***", "PATH": "/bin",
                "AWS_SESSION_TOKEN": "***", "DATABASE_URL": "postgresql://***@db/app",
                "TOKEN_REF": "{{ token }}", "NESTED": {"PRIVATE_KEY": "***"}},
        "variables": {"properties": {"env": {"type": "object", "default": {"MY_SECRET": "***"}},
                                     "api_key": {"type": "string", "default": "shown"}}},
        "containerOverrides": [{"environment": [{"name": "GH_TOKEN", "value": "***"},
                                                {"name": "MODE", "value": "debug"}]}],
        "kms_key_id": "arn:aws:kms:key/1", "image": "https://***@registry/img"}
    assert redaction.redact_url("see https://a:b@c@h/x and ssh://git@h/r, a@b") == \
        "see https://***@h/x and ssh://***@h/r, a@b"
    assert redaction.redacted_path({"env": {"API_KEY": "***"}}) == "env.API_KEY"
    assert redaction.redacted_path({"l": [{"name": "X_TOKEN", "value": "***"}]}) == "l[0].value"
    assert redaction.redacted_path({"env": {"MODE": "***"}}) is None


async def test_the_api_shows_stars_while_the_store_keeps_the_values_sealed(
        tmp_path: Path) -> None:
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    app = create_app(db, None, Settings(home=tmp_path, api_token=None))
    try:
        async with TestClient(TestServer(app)) as client:
            template = (await (await client.get(
                "/api/pool-types/process/base-job-template")).json())
            template["variables"]["properties"]["env"]["default"] = {"POOL_SECRET": "pool-s"}
            pool = await client.post("/api/work-pools", json={
                "name": "p1", "base_job_template": template})
            assert pool.status == 201, await pool.text()
            env = {"API_KEY": "dep-k", "MODE": "fast"}
            applied = await client.put("/api/deployments", json={
                "name": "d1", "flow_name": "f1", "pool_name": "p1", "command": ["true"],
                "job_variables": {"env": env}})
            assert (await applied.json())["deployment"]["job_variables"]["env"] == {
                "API_KEY": "***", "MODE": "fast"}
            run = await (await client.post("/api/deployments/f1/d1/runs", json={
                "job_variables": {"env": {"RUN_PASSWORD": "run-p"}}})).json()
            assert run["job_variables"]["env"] == {"RUN_PASSWORD": "***"}
            assert run["job_configuration"]["env"] == {
                "POOL_SECRET": "***", "API_KEY": "***", "MODE": "fast", "RUN_PASSWORD": "***"}
            listed = await (await client.get("/api/work-pools")).json()
            assert listed[0]["base_job_template"]["variables"]["properties"]["env"][
                "default"] == {"POOL_SECRET": "***"}
            # Sending the stars back would overwrite a secret: refused, naming the place.
            again = await client.patch("/api/work-pools/p1", json={
                "base_job_template": listed[0]["base_job_template"]})
            assert again.status == 422
            assert "variables.properties.env.default.POOL_SECRET" in (await again.json())[
                "message"]
        stored = await store.get_run(db, run["id"])
        assert stored.job_configuration is not None
        env = stored.job_configuration["env"]
        assert [name for name, value in env.items() if is_sealed(value)] == [
            "POOL_SECRET", "API_KEY", "RUN_PASSWORD"]
        assert open_json(env, db.secrets) == {
            "POOL_SECRET": "pool-s", "API_KEY": "dep-k", "MODE": "fast", "RUN_PASSWORD": "run-p"}
    finally:
        await db.close()


SECRET_FLOWS = '''
import hashlib
import os
import time

from dispatcher import flow


@flow(log_prints=True)
def check_secrets(release: str, digests: dict) -> dict:
    """Waits for the test to look at the process list, then says which variables the job
    received with the expected values (by digest: the values themselves stay unprinted)."""
    print("job started")
    deadline = time.monotonic() + 60
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(release)
        time.sleep(0.02)
    return {name: hashlib.sha256(os.environ.get(name, "").encode()).hexdigest() == digest
            for name, digest in digests.items()}
'''

SECRET_DEPLOYMENT = """
deployments:
  - name: secure
    entrypoint: flows.py:check_secrets
    source: "{source}"
    work_pool:
      name: local
      job_variables:
        env:
          API_KEY: "{api_key}"
          DB_PASSWORD: "{db_password}"
          DATABASE_URL: "postgresql://app:{db_password}@db.internal/app"
          REPO_TOKEN: "{repo_token}"
          PUSHPOOL_REPORT_BATCH_SECONDS: "0.1"
"""


@dataclass(frozen=True)
class Markers:
    """Secret values no output may ever contain, each unique to this test run."""

    api_token: str  # the server's PUSHPOOL_API_TOKEN
    api_key: str  # env API_KEY of the deployment
    db_password: str  # env DB_PASSWORD, and inside DATABASE_URL
    repo_token: str  # env REPO_TOKEN: the private repository's password (credential_env)
    run_token: str  # env SERVICE_TOKEN of one run's own job variables
    url_secret: str  # a token written into a source URL (refused)
    wrong_token: str  # what a CLI user sends as a wrong API token
    wrong_repo: str  # a wrong repository token, for a run that fails to fetch

    @classmethod
    def new(cls) -> Markers:
        return cls(*(f"marker-{name}-{uuid.uuid4().hex}" for name in cls.__dataclass_fields__))

    def all(self) -> list[str]:
        return list(vars(self).values())

    def found_in(self, text: str) -> list[str]:
        return [marker for marker in self.all() if marker in text]


class ArgvWatch(threading.Thread):
    """Samples every process's argv (/proc/*/cmdline) until stopped, keeping any that holds
    a marker. Short-lived processes (git) are caught when a sample falls in their life."""

    def __init__(self, markers: Markers):
        super().__init__(daemon=True)
        self.markers = [marker.encode() for marker in markers.all()]
        self.hits: list[str] = []
        self.samples = 0
        self.done = threading.Event()

    def sample(self) -> None:
        for pid in (name for name in os.listdir("/proc") if name.isdigit()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    argv = cmdline.read()
            except OSError:  # gone since listdir, or not ours to read
                continue
            if any(marker in argv for marker in self.markers):
                self.hits.append(argv.replace(b"\0", b" ").decode(errors="replace"))
        self.samples += 1

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(0.005)  # the sampling interval, not a synchronisation

    def stop(self) -> list[str]:
        self.done.set()
        self.join(DEADLINE_SECONDS)
        return self.hits


def cli(server: ServerProcess, *args: str, token: str | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``python -m dispatcher.cli ARGS`` against ``server``; the token goes in the env."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("PUSHPOOL_")}
    env.update(server.client_env())
    if token is not None:
        env["PUSHPOOL_API_TOKEN"] = token
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def private_repository(tmp_path: Path) -> Path:
    """A bare repository holding SECRET_FLOWS on branch main; returns its parent folder."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "--quiet", "--initial-branch", "main", cwd=work)
    (work / "flows.py").write_text(SECRET_FLOWS)
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "flows", cwd=work)
    root = tmp_path / "served"
    root.mkdir()
    git("clone", "--quiet", "--bare", str(work), str(root / "secrets.git"), cwd=tmp_path)
    return root


def wait_until(condition: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # polling interval of the condition, with a deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.slow
def test_secrets_never_reach_logs_errors_cli_output_or_argv(tmp_path: Path) -> None:
    marks = Markers.new()
    said: list[str] = []  # every answer, CLI output and message, checked at the end
    server = ServerProcess(tmp_path / "home", env={"PUSHPOOL_API_TOKEN": marks.api_token,
                                                   "PUSHPOOL_LOG_LEVEL": "DEBUG"})
    api = httpx.Client(base_url=server.url, headers=auth_headers(marks.api_token), timeout=30)
    watch = ArgvWatch(marks)
    server.start()
    try:
        api.post("/api/work-pools", json={"name": "local", "type": "process"}
                 ).raise_for_status()
        with serve_repos(git_root=private_repository(tmp_path),
                         git_password=marks.repo_token) as host:
            repo_url = f"{host.url}/git/secrets.git"
            watch.start()

            # A token in the source URL is refused, by the CLI and the API, without echo.
            (tmp_path / "bad").mkdir()
            (tmp_path / "bad" / "pushpool.yaml").write_text(SECRET_DEPLOYMENT.format(
                source=repo_url.replace("://", f"://git:{marks.url_secret}@") + "#branch=main",
                api_key=marks.api_key, db_password=marks.db_password,
                repo_token=marks.repo_token))
            refused = cli(server, "deploy", cwd=tmp_path / "bad")
            assert refused.returncode == 2 and "credential_env" in refused.stderr, refused
            said += [refused.stdout, refused.stderr]
            answer = api.put("/api/deployments", json={
                "name": "leaky", "flow_name": "check_secrets", "pool_name": "local",
                "entrypoint": "flows.py:check_secrets",
                "source": f"https://user:{marks.url_secret}@example.com/x.git"})
            assert answer.status_code == 422 and "https://***@example.com" in answer.text
            said.append(answer.text)
            assert api.get("/api/deployments").json() == []

            # The supported way: the token in the job's env, named by credential_env.
            (tmp_path / "good").mkdir()
            (tmp_path / "good" / "pushpool.yaml").write_text(SECRET_DEPLOYMENT.format(
                source=f"{repo_url}#branch=main&credential_env=REPO_TOKEN",
                api_key=marks.api_key, db_password=marks.db_password,
                repo_token=marks.repo_token))
            deployed = cli(server, "deploy", cwd=tmp_path / "good")
            assert deployed.returncode == 0, deployed
            said += [deployed.stdout, deployed.stderr]

            # Bad requests that carry secrets get errors that do not repeat them.
            runs = "/api/deployments/check_secrets/secure/runs"
            for job_variables in ({"env": {"SERVICE_TOKEN": marks.run_token}, "cpu": "lots"},
                                  {"env": {"SERVICE_TOKEN": [marks.run_token]}},
                                  {"env": {"API_KEY": "***"}}):
                answer = api.post(runs, json={"job_variables": job_variables})
                assert answer.status_code == 422, answer.text
                said.append(answer.text)
            answer = httpx.get(f"{server.url}/api/runs", headers=auth_headers(marks.wrong_token))
            assert answer.status_code == 401
            said.append(answer.text)

            release = tmp_path / "release"
            digests = {name: hashlib.sha256(value.encode()).hexdigest() for name, value in {
                "API_KEY": marks.api_key, "DB_PASSWORD": marks.db_password,
                "SERVICE_TOKEN": marks.run_token}.items()}
            run = api.post(runs, json={
                "parameters": {"release": str(release), "digests": digests},
                "job_variables": {"env": {"SERVICE_TOKEN": marks.run_token}}}).json()
            wait_until(lambda: any(line["message"] == "job started" for line in
                                   api.get(f"/api/runs/{run['id']}/logs").json()),
                       "the job to start")

            # The job is running: its process and the supervisor's are in the list now.
            watch.sample()
            job = json.loads((Path(api.get(f"/api/runs/{run['id']}").json()["infra_id"])
                              / "job.json").read_text())
            with open(f"/proc/{job['pid']}/environ", "rb") as environ:
                job_env = environ.read()
            assert marks.api_key.encode() in job_env  # the job gets the real values ...
            assert marks.api_token.encode() not in job_env  # ... and never the server's token
            for args in (("run", "inspect", run["id"]), ("run", "inspect", run["id"], "-o",
                         "json"), ("run", "ls", "-o", "json"),
                         ("deployment", "inspect", "check_secrets/secure"),
                         ("deployment", "ls", "-o", "json"), ("work-pool", "inspect", "local")):
                shown = cli(server, *args)
                assert shown.returncode == 0, shown
                said += [shown.stdout, shown.stderr]
            wrong = cli(server, "run", "ls", token=marks.wrong_token)
            assert wrong.returncode == 1 and "API token" in wrong.stderr, wrong
            said += [wrong.stdout, wrong.stderr]

            release.touch()
            done = wait_until(lambda: (r := api.get(f"/api/runs/{run['id']}").json())["state"]
                              in ("COMPLETED", "FAILED", "CRASHED") and r, "the run to end")
            assert done["state"] == "COMPLETED", done
            assert done["result"] == dict.fromkeys(digests, True)
            assert done["job_configuration"]["env"]["API_KEY"] == "***"
            # It holds DB_PASSWORD's value, so it is sealed whole, and hidden whole.
            assert done["job_configuration"]["env"]["DATABASE_URL"] == "***"
            logs = cli(server, "run", "logs", run["id"])
            said += [logs.stdout, logs.stderr]

            # A run with a wrong repository token fails with git's message, not the token.
            failed_run = api.post(runs, json={
                "parameters": {"release": str(release), "digests": {}},
                "job_variables": {"env": {"REPO_TOKEN": marks.wrong_repo}}}).json()
            failed = wait_until(lambda: (r := api.get(f"/api/runs/{failed_run['id']}").json())
                                ["state"] in ("COMPLETED", "FAILED", "CRASHED") and r,
                                "the run with a wrong token to end")
            assert failed["state"] == "FAILED" and "could not fetch" in failed["state_message"]
        hits = watch.stop()

        for path in ("/api/runs?limit=1000", f"/api/runs/{run['id']}",
                     f"/api/runs/{run['id']}/logs", f"/api/runs/{failed_run['id']}/logs",
                     "/api/deployments", "/api/deployments/check_secrets/secure",
                     "/api/work-pools", "/metrics"):
            answer = api.get(path)
            assert answer.status_code == 200, (path, answer.text)
            said.append(answer.text)
    finally:
        watch.done.set()
        api.close()
        server.stop()

    assert watch.samples > 10
    assert hits == [], hits
    assert {marker: [text for text in said if marker in text]
            for marker in marks.found_in("\n".join(said))} == {}
    log = server.log_path.read_text()
    assert "pushpool" in log or log == ""  # the log is the server's own
    assert marks.found_in(log) == [], [line for line in log.splitlines()
                                       if marks.found_in(line)]


# ---------------------------------------------------------------------------- start-up failures

HEX_KEY = re.compile(r"[0-9a-f]{32,}")  # a generated key (run-token key: 64 hex digits)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) \S+: ")


def _made_store(home: Path) -> Path:
    """A store that has been through a first start (migrated, run-token key stored)."""
    async def make() -> None:
        db = await Database.connect(f"sqlite+aiosqlite:///{home}/pushpool.db")
        await store.run_token_key(db)
        await db.close()

    home.mkdir(parents=True)
    asyncio.run(make())
    return home / "pushpool.db"


@contextlib.contextmanager
def _port_in_use() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what another process writing to it holds
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


START_FAILURES = {
    # scenario: (what the one line must say, exit code)
    "port in use": ("the port is already in use", 1),
    "read-only store": ("is read-only", 1),
    "locked store": ("is locked by another process", 1),
    "unusable home": ("cannot make the store", 1),
    "unknown database kind": ("which pushpool cannot use", 2),
    "not a URL": ("is not a database URL", 2),
    "missing PostgreSQL database": ("does not exist", 1),
    "bad setting": ("PUSHPOOL_PORT: Input should be a valid integer", 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(START_FAILURES))
def test_start_up_failures_say_one_line_and_never_a_secret(scenario: str,
                                                           tmp_path: Path) -> None:
    """`pushpool server start` that cannot start: one `Error:` line saying what to do, a
    non-zero exit, no traceback, and no secret anywhere in what it printed (at DEBUG)."""
    marks = Markers.new()
    home = tmp_path / "home"
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("PUSHPOOL_")}
    env.update({"PUSHPOOL_HOME": str(home), "PUSHPOOL_LOG_LEVEL": "DEBUG",
                "PUSHPOOL_API_TOKEN": marks.api_token, "PUSHPOOL_EVENTS_SECRET": marks.api_key})
    port = ServerProcess(home).port
    held: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if scenario == "port in use":
        held = _port_in_use()
    elif scenario == "read-only store":
        # What a read-only file or file system gives (root writes through file modes).
        path = _made_store(home)
        with sqlite3.connect(path) as conn:  # a store that has no run-token key yet
            conn.execute("DELETE FROM server_secrets")
        env["PUSHPOOL_DATABASE_URL"] = f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"
    elif scenario == "locked store":
        held = _locked(_made_store(home))
    elif scenario == "unusable home":
        tmp_path.joinpath("a-file").write_text("")
        env["PUSHPOOL_HOME"] = str(tmp_path / "a-file" / "home")
    elif scenario == "unknown database kind":
        env["PUSHPOOL_DATABASE_URL"] = f"mysql://root:{marks.db_password}@127.0.0.1/x"
    elif scenario == "not a URL":
        env["PUSHPOOL_DATABASE_URL"] = f"{marks.db_password}@nowhere"
    elif scenario == "missing PostgreSQL database":
        env["PUSHPOOL_DATABASE_URL"] = PG_ADMIN_URL.replace(
            "postgres@", f"postgres:{marks.db_password}@").rsplit("/", 1)[0] + "/no_such_db"
    elif scenario == "bad setting":
        env["PUSHPOOL_PORT"] = marks.run_token
    with held as taken_port:
        done = subprocess.run(
            [sys.executable, "-m", "dispatcher.cli", "server", "start", "--port",
             str(taken_port or port)], env=env, capture_output=True, text=True, timeout=90,
            stdin=subprocess.DEVNULL, check=False)
    said, code = START_FAILURES[scenario]
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    errors = [line for line in output.splitlines() if line and not LOG_LINE.match(line)]
    assert len(errors) == 1 and errors[0].startswith("Error: "), output
    assert said in errors[0], output
    assert "Traceback" not in output and " ERROR " not in output, output
    assert marks.found_in(output) == [] and HEX_KEY.search(output) is None, output


@pytest.mark.slow
def test_a_first_start_logs_the_migrations_but_not_alembics_set_up(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "home", env={"PUSHPOOL_LOG_LEVEL": "INFO"})
    server.start()
    server.stop()
    log = server.log_path.read_text()
    assert "Running upgrade 0007 -> 0008" in log
    assert "alembic.runtime.plugins" not in log and "Context impl" not in log, log
