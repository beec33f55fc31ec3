"""Webhooks that a stranger cannot forge: signatures (valid, wrong secret, stale,
replayed, GitHub's form, a bearer secret, a rotated secret inside and after its grace
period), the sandboxed parameters template, idempotent retries, and nothing stored on
any refusal. Against the real API and store (SQLite and PostgreSQL); the journey at the
end runs README's openssl and curl recipe against a real server process and the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select

from dispatcher import crypto, operations
from dispatcher.api import create_app
from dispatcher.errors import Unauthorized
from dispatcher.settings import Settings
from dispatcher.store.common import utcnow
from dispatcher.store.db import Database
from dispatcher.store.tables import runs, webhook_deliveries, webhooks
from dispatcher.webhooks import signatures, templating
from tests.fakes.pushpool_server import ServerProcess
from tests.test_api import RecordingEngine, call

Client = TestClient[web.Request, web.Application]
PROJECT = Path(__file__).resolve().parents[1]
API_TOKEN = "hook-test-api-token"
SCHEMA = {"type": "object", "properties": {"ref": {"type": "string"},
                                           "n": {"type": "integer"}},
          "required": ["ref"]}
REF_TEMPLATE = '{"ref": {{ body.ref | tojson }}}'


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, api_token=SecretStr(API_TOKEN))


@pytest.fixture
async def client(db: Database, engine: RecordingEngine, settings: Settings
                 ) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with TestClient(TestServer(create_app(db, engine, settings)),
                          headers=headers) as c:
        yield c


async def make_deployment(client: Client) -> None:
    await call(client, "POST", "/api/work-pools", 201, json={"name": "p1", "type": "process"})
    await call(client, "PUT", "/api/deployments", 201, json={
        "name": "d1", "flow_name": "f1", "pool_name": "p1", "command": ["true"],
        "parameter_schema": SCHEMA})


async def make_hook(client: Client, name: str = "h1", **extra: Any) -> tuple[str, str]:
    """A webhook on f1/d1: its path and its secret."""
    answer = await call(client, "POST", "/api/webhooks", 201, json={
        "name": name, "deployment": "f1/d1", **extra})
    return answer["webhook"]["path"], answer["secret"]


def signed(secret: str, body: bytes, *, delivery: str | None = None,
           timestamp: int | None = None) -> dict[str, str]:
    delivery = delivery or uuid.uuid4().hex
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"Content-Type": "application/json",
            "X-Pushpool-Delivery": delivery, "X-Pushpool-Timestamp": str(timestamp),
            "X-Pushpool-Signature": signatures.sign(secret, timestamp, delivery, body)}


async def deliver(client: Client, path: str, body: bytes, headers: dict[str, str],
                  expect: int) -> dict[str, Any]:
    """A delivery as a stranger sends it: without the API token."""
    response = await client.post(path, data=body, headers={"Authorization": "", **headers})
    text = await response.text()
    assert response.status == expect, f"{response.status} {text}"
    answer: dict[str, Any] = json.loads(text)
    return answer


async def stored(db: Database) -> tuple[int, int]:
    """How many runs and remembered deliveries there are."""
    def count(conn: Any) -> tuple[int, int]:
        return (len(conn.execute(select(runs.c.id)).all()),
                len(conn.execute(select(webhook_deliveries.c.replay_key)).all()))
    return await db.run(count)


async def refused(db: Database, client: Client, path: str, body: bytes,
                  headers: dict[str, str], expect: int) -> dict[str, Any]:
    """A delivery that must be refused with ``expect`` and leave nothing behind."""
    before = await stored(db)
    answer = await deliver(client, path, body, headers, expect)
    assert set(answer) == {"error", "message", "details"} and answer["message"]
    assert await stored(db) == before
    return answer


# ---------------------------------------------------------------------------- signatures


async def test_a_signed_delivery_starts_a_run_with_the_templated_parameters(
        client: Client, db: Database, engine: RecordingEngine) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE)
    assert re.fullmatch(r"/hooks/[A-Za-z0-9_-]{20,}", path)
    body = b'{"ref": "main", "sender": {"login": "octocat"}}'
    wakes = engine.wakes
    answer = await deliver(client, path, body, signed(secret, body), 202)
    assert answer["created"] is True and set(answer) == {"run_id", "created"}
    run = await call(client, "GET", f"/api/runs/{answer['run_id']}", 200)
    assert run["parameters"] == {"ref": "main"} and run["state"] == "SCHEDULED"
    assert run["deployment_name"] == "f1/d1"
    assert engine.wakes == wakes + 1


async def test_a_wrong_secret_a_tampered_delivery_or_no_signature_is_refused(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE)
    body = b'{"ref": "main"}'
    wrong = await refused(db, client, path, body, signed("not-the-secret", body), 401)
    assert "X-Pushpool-Signature" in wrong["message"] and secret not in wrong["message"]
    good = signed(secret, body)
    await refused(db, client, path, b'{"ref": "evil"}', good, 401)  # another body
    other_id = {**good, "X-Pushpool-Delivery": "another-id"}  # the id is signed too
    await refused(db, client, path, body, other_id, 401)
    for header in ("X-Pushpool-Signature", "X-Pushpool-Timestamp", "X-Pushpool-Delivery"):
        missing = {k: v for k, v in good.items() if k != header}
        answer = await refused(db, client, path, body, missing, 401)
        assert header in answer["message"]
    # The API token opens the API, not a webhook.
    await refused(db, client, path, body, {"Authorization": f"Bearer {API_TOKEN}"}, 401)


async def test_a_stale_or_future_timestamp_is_refused(client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE)
    body = b'{"ref": "main"}'
    now = int(time.time())
    for skew in (-301, 301, -3600):
        answer = await refused(db, client, path, body,
                               signed(secret, body, timestamp=now + skew), 401)
        assert "X-Pushpool-Timestamp" in answer["message"], answer
    await deliver(client, path, body, signed(secret, body, timestamp=now - 240), 202)


async def test_a_replayed_delivery_is_refused_and_a_new_id_is_a_new_delivery(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE)
    body = b'{"ref": "main"}'
    headers = signed(secret, body)
    first = await deliver(client, path, body, headers, 202)
    answer = await refused(db, client, path, body, headers, 409)
    assert "already received" in answer["message"]
    second = await deliver(client, path, body, signed(secret, body), 202)
    assert second["run_id"] != first["run_id"]  # no idempotency key: another run


async def test_github_form_is_checked_and_a_copied_body_refused(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(
        client, scheme="github", parameters_template=REF_TEMPLATE,
        idempotency_key_template='{{ headers["x-github-delivery"] }}')
    body = json.dumps({"ref": "refs/heads/main", "after": "4f2a9c"}).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": str(uuid.uuid4()),
               "X-Hub-Signature-256": signatures.sign_github(secret, body)}
    answer = await deliver(client, path, body, headers, 202)
    run = await call(client, "GET", f"/api/runs/{answer['run_id']}", 200)
    assert run["parameters"] == {"ref": "refs/heads/main"}
    assert run["idempotency_key"] == headers["X-GitHub-Delivery"]
    # GitHub signs the body alone: a copy under a new delivery id is still a copy.
    copy = {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}
    await refused(db, client, path, body, copy, 409)
    forged = {**headers, "X-Hub-Signature-256": signatures.sign_github("guess", body)}
    await refused(db, client, path, b'{"ref": "x"}', forged, 401)
    pushpool_form = signed(secret, b'{"ref": "y"}')  # not this webhook's scheme
    await refused(db, client, path, b'{"ref": "y"}', pushpool_form, 401)
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    answer = await refused(db, client, path, b"payload=%7B%7D", form, 415)
    assert "application/json" in answer["message"]


async def test_bearer_form_takes_the_secret_itself(client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, scheme="bearer", parameters_template=REF_TEMPLATE)
    body = b'{"ref": "main"}'
    await deliver(client, path, body, {"Authorization": f"Bearer {secret}"}, 202)
    await refused(db, client, path, body, {"Authorization": "Bearer wrong"}, 401)
    await refused(db, client, path, body, {}, 401)
    with_id = {"Authorization": f"Bearer {secret}", "X-Pushpool-Delivery": "d-1"}
    await deliver(client, path, body, with_id, 202)
    await refused(db, client, path, body, with_id, 409)


async def test_a_rotated_secret_works_inside_its_grace_period_and_not_after(
        client: Client, db: Database, settings: Settings) -> None:
    await make_deployment(client)
    path, old = await make_hook(client, parameters_template=REF_TEMPLATE)
    rotated = await call(client, "POST", "/api/webhooks/h1/rotate-secret", 200,
                         json={"grace_seconds": 3600})
    new = rotated["secret"]
    assert new != old and rotated["webhook"]["previous_secret_expires"]
    body = b'{"ref": "main"}'
    for secret in (old, new):
        await deliver(client, path, body, signed(secret, body), 202)
    # After the grace period (the same operation the route calls, two hours from now):
    later = utcnow() + timedelta(hours=2)
    box = db.secrets
    slug = path.rsplit("/", 1)[1]

    async def at_later(secret: str) -> None:
        headers = signed(secret, body, timestamp=int(later.timestamp()))
        await operations.webhooks.deliver(db, box, slug, headers, body, json.loads,
                                          now=later)

    await at_later(new)
    with pytest.raises(Unauthorized, match="does not match"):
        await at_later(old)
    # No grace: the secret being replaced stops at once (and the one before it too).
    again = await call(client, "POST", "/api/webhooks/h1/rotate-secret", 200,
                       json={"grace_seconds": 0})
    assert again["webhook"]["previous_secret_expires"] is None
    for secret in (old, new):
        await refused(db, client, path, body, signed(secret, body), 401)
    await deliver(client, path, body, signed(again["secret"], body), 202)
    await call(client, "POST", "/api/webhooks/h1/rotate-secret", 422,
               json={"grace_seconds": -1})


# ---------------------------------------------------------------------------- the template


@pytest.mark.parametrize("source", [
    "{{ body.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    '{{ body | attr("__class__") }}',
    '{{ "{0.__class__}".format(body) }}',
    "{{ body.update({'x': 1}) }}",
    "{{ 'a' * 100000000 }}",
    "{{ 9 ** 999999 }}",
])
def test_the_sandbox_refuses_python_internals_and_runaway_values(source: str) -> None:
    context = templating.DeliveryContext({"ref": "main"}, {}, "d-1")
    with pytest.raises(templating.TemplateProblem) as problem:
        templating.render_text(source, "parameters_template", context)
    assert "sandbox" in problem.value.message


def test_the_template_sees_body_headers_and_delivery_id_but_no_credentials() -> None:
    context = templating.DeliveryContext(
        {"ref": "main"}, {"Authorization": "Bearer s", "Cookie": "c", "X-Event": "push"}, "d-7")
    rendered = templating.render_parameters(
        '{"ref": {{ body.ref | tojson }}, "event": {{ headers["x-event"] | tojson }}, '
        '"id": {{ delivery_id | tojson }}, "hidden": {{ (headers.authorization is defined '
        'or headers.cookie is defined) | tojson }}}', context)
    assert rendered == {"ref": "main", "event": "push", "id": "d-7", "hidden": False}
    assert templating.render_parameters(None, templating.DeliveryContext(
        {"parameters": {"n": 1}, "other": 2}, {}, None)) == {"n": 1}


async def test_a_template_that_reaches_internals_answers_422_and_stores_nothing(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(
        client, parameters_template='{"ref": {{ body.__class__.__name__ | tojson }}}')
    body = b'{"ref": "main"}'
    answer = await refused(db, client, path, body, signed(secret, body), 422)
    assert answer["details"][0]["field"] == "parameters_template"
    assert "unsafe" in answer["message"]


async def test_bad_bodies_and_parameters_are_refused_with_the_reason(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE)
    not_json = b"<xml/>"
    answer = await refused(db, client, path, not_json, signed(secret, not_json), 400)
    assert "not valid JSON" in answer["message"]
    no_ref = b'{"other": 1}'
    answer = await refused(db, client, path, no_ref, signed(secret, no_ref), 422)
    assert "has no attribute 'ref'" in answer["message"]
    wrong_type = b'{"ref": 5}'
    answer = await refused(db, client, path, wrong_type, signed(secret, wrong_type), 422)
    assert answer["details"][0]["field"] == "parameters.ref"
    path2, secret2 = await make_hook(client, "h2", parameters_template="[1, 2]")
    body = b"{}"
    answer = await refused(db, client, path2, body, signed(secret2, body), 422)
    assert "not an object" in answer["message"]


async def test_creating_a_webhook_checks_its_fields_and_stores_nothing_when_bad(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    for body, field in [
        ({"name": "h", "deployment": "f1/d1", "parameters_template": "{{ body.ref "},
         "parameters_template"),
        ({"name": "h", "deployment": "f1/d1", "idempotency_key_template": "{% if %}"},
         "idempotency_key_template"),
        ({"name": "h", "deployment": "f1/nope"}, "deployment"),
        ({"name": "h", "deployment": "no-slash"}, "deployment"),
        ({"name": "h", "deployment": "f1/d1", "scheme": "md5"}, "scheme"),
        ({"name": "bad name", "deployment": "f1/d1"}, "name"),
    ]:
        answer = await call(client, "POST", "/api/webhooks", 422, json=body)
        assert answer["details"][0]["field"] == field, answer
    assert await call(client, "GET", "/api/webhooks", 200) == []
    await make_hook(client, "h")
    await call(client, "POST", "/api/webhooks", 409, json={"name": "h", "deployment": "f1/d1"})


# ---------------------------------------------------------------------------- lifecycle


async def test_the_secret_is_shown_once_and_stored_sealed(
        client: Client, db: Database, settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await make_deployment(client)
    path, secret = await make_hook(client, description="deploys on push")
    shown = [await call(client, "GET", "/api/webhooks", 200),
             await call(client, "GET", "/api/webhooks/h1", 200),
             await call(client, "POST", "/api/webhooks/h1/disable", 200),
             await call(client, "POST", "/api/webhooks/h1/enable", 200)]
    assert all(secret not in json.dumps(answer) for answer in shown)
    assert shown[1]["path"] == path and shown[1]["deployment"] == "f1/d1"
    assert (shown[2]["enabled"], shown[3]["enabled"]) == (False, True)
    row = (await db.run(lambda conn: conn.execute(select(webhooks)).all()))[0]
    assert crypto.is_sealed(row.secret) and secret not in json.dumps(
        [str(value) for value in row])
    assert db.secrets.open(row.secret) == secret
    await deliver(client, path, b"{}", signed("wrong", b"{}"), 401)
    assert secret not in caplog.text


async def test_disabled_deleted_and_unknown_webhooks_answer_the_same_404(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE)
    body = b'{"ref": "main"}'
    unknown = await refused(db, client, "/hooks/no-such-hook", body, signed(secret, body), 404)
    await call(client, "POST", "/api/webhooks/h1/disable", 200)
    disabled = await refused(db, client, path, body, signed(secret, body), 404)
    assert disabled["message"] == unknown["message"]
    await call(client, "POST", "/api/webhooks/h1/enable", 200)
    await deliver(client, path, body, signed(secret, body), 202)
    await call(client, "DELETE", "/api/webhooks/h1", 204)
    await refused(db, client, path, body, signed(secret, body), 404)
    await call(client, "GET", "/api/webhooks/h1", 404)


async def test_a_retried_delivery_with_the_same_idempotency_key_returns_the_same_run(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE,
                                   idempotency_key_template="push-{{ body.after }}")
    body = b'{"ref": "main", "after": "4f2a9c"}'
    first = await deliver(client, path, body, signed(secret, body), 202)
    again = await deliver(client, path, body, signed(secret, body), 202)
    assert (first["created"], again["created"]) == (True, False)
    assert again["run_id"] == first["run_id"]
    run = await call(client, "GET", f"/api/runs/{first['run_id']}", 200)
    assert run["idempotency_key"] == "push-4f2a9c"
    assert (await stored(db))[0] == 1


async def test_concurrent_copies_of_one_delivery_make_one_run(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE)
    body = b'{"ref": "main"}'
    headers = signed(secret, body)

    async def send() -> int:
        response = await client.post(path, data=body, headers=headers)
        return response.status

    statuses = await asyncio.gather(*(send() for _ in range(8)))
    assert sorted(statuses) == [202] + [409] * 7
    assert await stored(db) == (1, 1)


async def test_a_deployment_or_pool_with_webhooks_is_not_deleted_under_them(
        client: Client, db: Database) -> None:
    await make_deployment(client)
    await make_hook(client)
    answer = await call(client, "DELETE", "/api/deployments/f1/d1", 409)
    assert "'h1'" in answer["message"] and "webhook delete" in answer["message"]
    await call(client, "DELETE", "/api/work-pools/p1", 409)
    await call(client, "GET", "/api/deployments/f1/d1", 200)
    await call(client, "DELETE", "/api/webhooks/h1", 204)
    await call(client, "DELETE", "/api/deployments/f1/d1", 204)


async def test_expired_deliveries_are_forgotten(client: Client, db: Database) -> None:
    await make_deployment(client)
    path, secret = await make_hook(client, parameters_template=REF_TEMPLATE)
    body = b'{"ref": "main"}'
    await deliver(client, path, body, signed(secret, body), 202)
    await db.run(lambda conn: conn.execute(webhook_deliveries.update().values(
        expires=utcnow() - timedelta(seconds=1))), write=True)
    await deliver(client, path, body, signed(secret, body), 202)
    assert (await stored(db))[1] == 1  # the expired one went when the next came


# ---------------------------------------------------------------------------- the journey


def readme_recipe() -> str:
    """README's shell recipe for a signed delivery, as a user copies it."""
    readme = (PROJECT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    return next(block for block in blocks if "X-Pushpool-Signature: sha256=" in block)


@pytest.mark.slow
def test_the_readme_journey_create_sign_with_openssl_and_curl_rotate(tmp_path: Path) -> None:
    for tool in ("openssl", "curl", "bash"):
        assert shutil.which(tool), f"{tool} is needed for README's recipe"
    server = ServerProcess(tmp_path / "home")
    server.start()
    env = {**server.client_env(), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dispatcher.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        with httpx.Client(base_url=server.url, timeout=10) as api:
            api.post("/api/work-pools", json={"name": "local"}).raise_for_status()
            api.put("/api/deployments", json={
                "name": "hi", "flow_name": "hello", "pool_name": "local",
                "command": ["python3", "-c", "print('hi')"],
                "parameter_schema": {"type": "object",
                                     "properties": {"name": {"type": "string"}}}},
                    ).raise_for_status()
        template = tmp_path / "params.j2"
        template.write_text('{"name": {{ body.sender.login | tojson }}}')
        created = json.loads(cli("webhook", "create", "on-push", "--deployment", "hello/hi",
                                 "--parameters-template", str(template),
                                 "--idempotency-key-template", "{{ body.after }}",
                                 "-o", "json"))
        url, secret = server.url + created["webhook"]["path"], created["secret"]

        def send(with_secret: str) -> dict[str, Any]:
            done = subprocess.run(["bash", "-c", readme_recipe()], capture_output=True,
                                  text=True, timeout=30,
                                  env={"URL": url, "SECRET": with_secret, "PATH": "/usr/bin:/bin"})
            assert done.returncode == 0, done.stderr
            answer: dict[str, Any] = json.loads(done.stdout)
            return answer

        first = send(secret)
        assert first["created"] is True
        assert send(secret) == {**first, "created": False}  # the same idempotency key
        with httpx.Client(base_url=server.url, timeout=10) as api:
            run = api.get(f"/api/runs/{first['run_id']}").json()
            assert run["parameters"] == {"name": "octocat"}
            assert wait_for_state(api, first["run_id"]) == "COMPLETED"
        table = cli("webhook", "rotate-secret", "on-push", "--grace", "0s")
        new_secret = re.search(r"Secret: (\S+)", table).group(1)  # type: ignore[union-attr]
        assert "no longer accepted" in table
        assert "unauthorized" in send(secret)["error"]
        assert send(new_secret)["run_id"] == first["run_id"]
        listing = cli("webhook", "ls")
        assert "on-push" in listing and secret not in listing and new_secret not in listing
        assert new_secret not in cli("webhook", "inspect", "on-push")
    finally:
        server.stop()
    assert secret not in server.log_path.read_text()


def wait_for_state(api: httpx.Client, run_id: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = str(api.get(f"/api/runs/{run_id}").json()["state"])
        if state in ("COMPLETED", "FAILED", "CRASHED"):
            return state
        time.sleep(0.2)  # the polling interval of a condition with a deadline
    raise AssertionError(f"run {run_id} did not end within 60 s")


def test_readme_recipe_signs_as_the_server_checks() -> None:
    """The openssl pipeline of README and ``signatures.sign`` agree byte for byte."""
    ts, delivery, body = "1767225600", "abc123", '{"a": "é \\n %s"}'
    done = subprocess.run(
        ["bash", "-c", 'printf \'%s.%s.%s\' "$TS" "$ID" "$BODY" | openssl dgst -sha256 '
                       '-hmac "$SECRET" | sed \'s/^.*= //\''],
        env={"TS": ts, "ID": delivery, "BODY": body, "SECRET": "s3cr3t",
             "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=10, check=True)
    assert "sha256=" + done.stdout.strip() == signatures.sign(
        "s3cr3t", int(ts), delivery, body.encode())


@pytest.mark.parametrize("args, flag", [
    (["create", "h", "--deployment", "f/d", "--scheme", "md5"], "--scheme"),
    (["create", "h", "--deployment", "f/d", "--parameters-template", "/no/such/file"],
     "--parameters-template"),
    (["rotate-secret", "h", "--grace", "soon"], "--grace"),
])
def test_the_cli_refuses_bad_flags_before_calling_the_api(args: list[str], flag: str) -> None:
    from typer.testing import CliRunner

    from dispatcher.cli import app

    # No server listens there: a flag checked after a request would fail otherwise.
    result = CliRunner().invoke(app, ["webhook", *args],
                                env={"PUSHPOOL_API_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert flag in result.output
