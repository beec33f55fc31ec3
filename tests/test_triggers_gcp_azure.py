"""The Google functions under the real functions-framework server on 127.0.0.1, sent
HTTP requests and real CloudEvents (binary and structured modes); the Azure functions
called with the official azure.functions types, as the v2 worker decodes them."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dispatcher import operations
from dispatcher.models import DeploymentApply, RunCreate, WorkPoolCreate
from dispatcher.store import Database
from dispatcher.triggers.package import GCP_MAIN
from providers import registry
from tests.fakes.recording_provider import STATE
from tests.serverless_samples import API_TOKEN, sample

pytest_plugins = ["tests.serverless_fixtures"]
PROJECT = Path(__file__).resolve().parents[1]
registry.register_provider("ledger", "tests.fakes.ledger_provider")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def functions_framework(tmp_path: Path, db: Database) -> Iterator[dict[str, str]]:
    """Both functions, each under its own functions-framework server, on the test's store
    with a ledger provider (the servers are other processes)."""
    (tmp_path / "main.py").write_text(GCP_MAIN)
    ledger = tmp_path / "ledger.jsonl"
    env = {**os.environ, "PUSHPOOL_DATABASE_URL": db.url, "PUSHPOOL_TICK_ALLOW_SQLITE": "1",
           "PUSHPOOL_API_TOKEN": API_TOKEN, "PYTHONPATH": str(PROJECT),
           "PUSHPOOL_EXTRA_PROVIDERS": json.dumps({"ledger": "tests.fakes.ledger_provider"}),
           "PUSHPOOL_LEDGER_PATH": str(ledger)}
    servers, urls = [], {"ledger": str(ledger)}
    for target, kind in (("http_function", "http"), ("cloud_event_function", "cloudevent")):
        port = free_port()
        servers.append(subprocess.Popen(
            [str(Path(sys.executable).with_name("functions-framework")), "--source",
             str(tmp_path / "main.py"), "--target", target, "--signature-type", kind,
             "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        urls[kind] = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        for kind in ("http", "cloudevent"):
            while True:
                try:
                    httpx.get(urls[kind] + "/api/health", timeout=2)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "functions-framework did not start"
                    time.sleep(0.1)
        yield urls
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


async def ledger_deployment(db: Database) -> str:
    await operations.pools.create_pool(db, WorkPoolCreate(name="l", type="ledger"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d1", flow_name="f1", pool_name="l", command=["true"]))
    run, _ = await operations.runs.create_run(db, "f1/d1", RunCreate())
    return run.id


def creations(ledger: str) -> dict[str, int]:
    from tests.fakes.ledger_provider import read_ledger

    return dict(read_ledger(Path(ledger)).creations_per_run()) if Path(ledger).exists() else {}


async def test_the_http_function_serves_the_api_with_its_token(
        functions_framework: dict[str, str], db: Database) -> None:
    url = functions_framework["http"]
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=url) as client:
        created = await client.post("/api/work-pools", json={"name": "g", "type": "process"},
                                    headers=auth)
        assert created.status_code == 201, created.text
        assert (await client.get("/api/work-pools")).status_code == 401
        listed = await client.get("/api/work-pools", headers=auth)
        assert [p["name"] for p in listed.json()] == ["g"]


async def test_cloud_events_in_binary_and_structured_mode_tick(
        functions_framework: dict[str, str], db: Database) -> None:
    url, ledger = functions_framework["cloudevent"], functions_framework["ledger"]
    run_id = await ledger_deployment(db)
    event = sample("pubsub_message_published.json")
    binary = {f"ce-{k}": str(event[k]) for k in ("specversion", "type", "source", "id",
                                                 "time")}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        answer = await client.post("/", json=event["data"], headers=binary)
        assert answer.status_code == 200, answer.text
        assert creations(ledger) == {run_id: 1}
        second = await ledger_deployment_run(db)
        structured = sample("eventarc_audit_log.json")
        answer = await client.post("/", content=json.dumps(structured),
                                   headers={"Content-Type": "application/cloudevents+json"})
        assert answer.status_code == 200, answer.text
    assert creations(ledger) == {run_id: 1, second: 1}


async def ledger_deployment_run(db: Database) -> str:
    run, _ = await operations.runs.create_run(db, "f1/d1", RunCreate())
    return run.id


@functools.cache
def azure_bindings() -> dict[str, list[str]]:
    """What the Azure worker indexes (once a process: the app refuses a second listing)."""
    from dispatcher.triggers import azure

    return {f.get_function_name(): f.get_raw_bindings() for f in azure.app.get_functions()}


async def test_the_azure_functions_take_the_official_types(trigger_env: Database) -> None:
    import azure.functions as func
    from azure.functions import meta
    from azure.functions.timer import TimerRequestConverter

    from dispatcher.triggers import azure

    bindings = azure_bindings()
    assert set(bindings) == {"pushpool_http", "pushpool_tick"}
    assert '"route": "{*path}"' in bindings["pushpool_http"][0]
    raw = sample("azure_http_request.json", API_TOKEN=API_TOKEN)
    request = func.HttpRequest(raw["method"], raw["url"], headers=raw["headers"],
                               body=raw["body"].encode())
    answer = await asyncio.to_thread(azure.http_trigger, request)
    assert answer.status_code == 201, answer.get_body()
    assert json.loads(answer.get_body())["name"] == "azure-pool"
    await operations.deployments.apply_deployment(trigger_env, DeploymentApply(
        name="d1", flow_name="f1", pool_name="azure-pool", command=["true"]))
    run, _ = await operations.runs.create_run(trigger_env, "f1/d1", RunCreate())
    timer = TimerRequestConverter.decode(
        meta.Datum(json.dumps(sample("azure_timer_binding.json")), "json"),
        trigger_metadata={})
    await asyncio.to_thread(azure.timer_trigger, timer)
    assert STATE.submits[run.id] == 1


EXECUTION = "projects/pushpool-test/locations/us-central1/jobs/j/executions/j-e2e01"


async def test_an_eventarc_execution_event_is_applied_through_the_cloud_run_adapter(
        functions_framework: dict[str, str], db: Database) -> None:
    from dispatcher import store
    from dispatcher.models import RunState

    await operations.pools.create_pool(db, WorkPoolCreate(name="gcr", type="cloud-run:push"))
    await operations.deployments.apply_deployment(db, DeploymentApply(
        name="d", flow_name="f", pool_name="gcr", image="ghcr.io/example/flows:1",
        command=["python", "-m", "flows.hello"],
        job_variables={"project": "pushpool-test"}))
    run, _ = await operations.runs.create_run(db, "f/d", RunCreate())
    await store.claim_due_runs(db, "me", limit=1, lease_seconds=60)
    await store.record_submissions(db, "me", [store.SubmissionRecord(
        run.id, EXECUTION, None, {}, None, "submitted")])
    finished = {"name": EXECUTION, "succeededCount": 1,
                "conditions": [{"type": "Completed", "state": "CONDITION_SUCCEEDED"}],
                "template": {"containers": [{"name": "pushpool", "env": [
                    {"name": "PUSHPOOL_RUN_ID", "value": run.id},
                    {"name": "PUSHPOOL_RUN_ATTEMPT", "value": "1"}]}]}}
    event = {"specversion": "1.0", "id": "audit-1", "time": "2026-12-03T07:00:00Z",
             "type": "google.cloud.audit.log.v1.written",
             "source": "//cloudaudit.googleapis.com/projects/pushpool-test/logs/activity",
             "datacontenttype": "application/json",
             "data": {"protoPayload": {
                 "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                 "serviceName": "run.googleapis.com",
                 "methodName": "google.cloud.run.v2.Jobs.RunJob",
                 "resourceName": EXECUTION, "response": finished},
                 "resource": {"type": "cloud_run_job"}, "severity": "NOTICE"}}
    async with httpx.AsyncClient(base_url=functions_framework["cloudevent"],
                                 timeout=60) as client:
        answer = await client.post("/", content=json.dumps(event),
                                   headers={"Content-Type": "application/cloudevents+json"})
        assert answer.status_code == 200, answer.text
    # Applied from the event itself: no status was read (there is no Cloud Run to read).
    assert (await store.get_run(db, run.id)).state is RunState.COMPLETED
