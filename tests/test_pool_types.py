"""Every pool type the server offers either works or says, in one line, which extra to install.

Real server processes and the CLI: first with every SDK installed (as `make install` sets
up), where each listed type gives its template and makes a pool; then with the cloud SDKs
absent (tests/fakes/missing_sdks.py: a machine where `pip install pushpool` ran without
extras), where each cloud type answers a 422 naming `pip install 'pushpool[EXTRA]'` (the
CLI: one line, exit 2) and nothing is stored; last, a server that lost an SDK after its
pools were made refuses their deployments the same way and fails their runs at once with
the same words, instead of retrying an ImportError until the submit deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import missing_sdks
from tests.fakes.pushpool_server import ServerProcess

pytestmark = pytest.mark.slow

ALL_EXTRAS = tuple(missing_sdks.EXTRA_MODULES)
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def full(home: Path) -> Iterator[ServerProcess]:
    yield from running(ServerProcess(home))


@pytest.fixture
def bare(home: Path) -> Iterator[ServerProcess]:
    yield from running(ServerProcess(home, without_extras=ALL_EXTRAS))


def cli(server: ServerProcess, *args: str, code: int, without: tuple[str, ...] = ()) -> str:
    """``pushpool ARGS`` against ``server``; ``without``: extras absent for the CLI too."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PUSHPOOL_")},
           **server.client_env(), "COLUMNS": "200"}
    program = ("import sys; from dispatcher.cli import main; "
               f"sys.argv = ['pushpool', *{list(args)!r}]; main()")
    if without:
        program = missing_sdks.python_code(without, program)
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == code, f"pushpool {' '.join(args)} -> {done.returncode}:\n{output}"
    return output


def pool_types(server: ServerProcess) -> list[dict[str, Any]]:
    types: list[dict[str, Any]] = httpx.get(f"{server.url}/api/pool-types").json()
    return types


def install_hint(extra: str) -> str:
    return f"pip install 'pushpool[{extra}]'"


def test_with_every_sdk_each_listed_type_makes_a_pool(full: ServerProcess) -> None:
    types = pool_types(full)
    assert {t["type"] for t in types} >= {"process", "ecs:push", "cloud-run:push",
                                          "azure-container-instance:push", "modal:push"}
    for number, entry in enumerate(types):
        assert entry["installed"] is True, entry
        template = httpx.get(f"{full.url}/api/pool-types/{entry['type']}/base-job-template")
        assert template.status_code == 200, template.text
        assert set(template.json()) == {"job_configuration", "variables"}
        out = cli(full, "work-pool", "create", f"pool-{number}", "--type", entry["type"], code=0)
        assert f"Created work pool 'pool-{number}'" in out
    assert len(httpx.get(f"{full.url}/api/work-pools").json()) == len(types)


def test_without_the_sdks_each_cloud_type_names_its_extra(bare: ServerProcess) -> None:
    types = pool_types(bare)
    assert [t["type"] for t in types if t["installed"]] == ["process"]
    api = httpx.Client(base_url=bare.url, timeout=30)
    for entry in types:
        pool_type, extra = entry["type"], entry["extra"]
        if pool_type == "process":
            cli(bare, "work-pool", "create", "local", "--type", "process", code=0)
            continue
        answer = api.get(f"/api/pool-types/{pool_type}/base-job-template")
        assert answer.status_code == 422, answer.text
        assert answer.json()["details"][0]["field"] == "type"
        assert install_hint(extra) in answer.json()["message"]
        # A template of one's own does not get a pool past the missing SDK either.
        template = httpx.get(f"{bare.url}/api/pool-types/process/base-job-template").json()
        answer = api.post("/api/work-pools", json={"name": "p", "type": pool_type,
                                                   "base_job_template": template})
        assert answer.status_code == 422 and install_hint(extra) in answer.text, answer.text

        for args in (("work-pool", "create", "p", "--type", pool_type),
                     ("work-pool", "get-default-base-job-template", "--type", pool_type)):
            out = cli(bare, *args, code=2)
            assert out.count("\n") == 1 and out.startswith("Error: "), out
            assert install_hint(extra) in out and "Traceback" not in out
        # --provision-infra runs the SDK in the CLI: a CLI without it says so the same way.
        out = cli(bare, "work-pool", "create", "p", "--type", pool_type, "--provision-infra",
                  "--yes", code=2, without=ALL_EXTRAS)
        assert out.count("\n") == 1 and install_hint(extra) in out, out
    assert [p["name"] for p in api.get("/api/work-pools").json()] == ["local"]
    api.close()


def test_a_server_that_lost_an_sdk_refuses_and_fails_at_once(home: Path,
                                                             tmp_path: Path) -> None:
    deployment = {"name": "d", "flow_name": "f", "pool_name": "fargate",
                  "image": "python:3.11-slim", "command": ["python", "-c", "print(1)"],
                  "job_variables": {"cloudwatch_logs": {"enabled": False}}}
    with_sdk = ServerProcess(home)
    for server in running(with_sdk):
        api = httpx.Client(base_url=server.url, timeout=30)
        api.post("/api/work-pools", json={"name": "fargate", "type": "ecs:push"}
                 ).raise_for_status()
        api.put("/api/deployments", json=deployment).raise_for_status()
        api.close()
    for server in running(ServerProcess(home, port=with_sdk.port, without_extras=("aws",))):
        api = httpx.Client(base_url=server.url, timeout=30)
        answer = api.put("/api/deployments", json={**deployment, "description": "changed"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["details"][0]["field"] == "pool_name"
        assert install_hint("aws") in answer.json()["message"]
        assert api.get("/api/deployments/f/d").json()["description"] is None

        run = api.post("/api/deployments/f/d/runs", json={}).raise_for_status().json()
        deadline = 30.0
        end = time.monotonic() + deadline
        while (shown := api.get(f"/api/runs/{run['id']}").json())["state"] not in FINAL:
            assert time.monotonic() < end, f"run not final after {deadline}s: {shown}"
            time.sleep(0.1)  # polling interval of the check, with a deadline
        assert shown["state"] == "FAILED" and shown["dead_letter"] is True, shown
        assert install_hint("aws") in shown["state_message"]
        assert shown["attempt"] <= 1 and len(shown["submit_errors"]) <= 1, shown
        api.close()
