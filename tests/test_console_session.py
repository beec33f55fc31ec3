"""The console's sign-in, CSRF and page safety, over HTTP against a real server (no
browser: these are the rules a browser cannot be trusted to enforce)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dispatcher.console import session
from tests.fakes.pushpool_server import ServerProcess

TOKEN = "session-test-token-91ab"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("console") / "home",
                        env={"PUSHPOOL_API_TOKEN": TOKEN})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def signed_in(server: ServerProcess) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.url, timeout=10)
    answer = client.post("/login", data={"token": TOKEN, "next": "/runs"},
                         headers={"Origin": server.url})
    assert answer.status_code == 303 and answer.headers["location"] == "/runs"
    cookie = client.cookies[session.COOKIE]
    return client, session.csrf_for(TOKEN, cookie)


def test_pages_need_a_session_when_a_token_is_set(server: ServerProcess) -> None:
    for path in ("/", "/pools", "/runs", "/deployments", "/pools/new"):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    client, _ = signed_in(server)
    assert client.get("/pools").status_code == 200


def test_the_cookie_acts_on_the_api_only_with_the_csrf_token(server: ServerProcess) -> None:
    client, csrf = signed_in(server)
    assert client.get("/api/work-pools").status_code == 200  # reads need no CSRF token
    refused = client.post("/api/work-pools", json={"name": "no-csrf"})
    assert refused.status_code == 403 and session.CSRF_HEADER in refused.json()["message"]
    wrong = client.post("/api/work-pools", json={"name": "no-csrf"},
                        headers={session.CSRF_HEADER: "0" * 64})
    assert wrong.status_code == 403
    made = client.post("/api/work-pools", json={"name": "with-csrf"},
                       headers={session.CSRF_HEADER: csrf})
    assert made.status_code == 201
    names = [p["name"] for p in client.get("/api/work-pools").json()]
    assert "with-csrf" in names and "no-csrf" not in names


def test_forged_and_expired_cookies_are_refused(server: ServerProcess) -> None:
    expired = session.new_session(TOKEN, now=time.time() - 2 * session.LIFETIME_SECONDS)
    forged = session.new_session("another-token")
    for value in (expired, forged, "garbage", f"{int(time.time()) + 999}.abc"):
        client = httpx.Client(base_url=server.url, cookies={session.COOKIE: value})
        assert client.get("/api/work-pools").status_code == 401
        assert client.get("/runs").status_code == 303


def test_sign_in_refuses_a_wrong_token_a_cross_site_post_and_foreign_redirects(
        server: ServerProcess) -> None:
    wrong = httpx.post(server.url + "/login", data={"token": "nope", "next": "/"})
    assert wrong.status_code == 401 and session.COOKIE not in wrong.cookies
    assert "nope" not in wrong.text
    cross = httpx.post(server.url + "/login", data={"token": TOKEN},
                       headers={"Origin": "http://evil.example",
                                "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and session.COOKIE not in cross.cookies
    for target in ("//evil.example/x", "https://evil.example/", "evil"):
        answer = httpx.post(server.url + "/login", data={"token": TOKEN, "next": target})
        assert answer.headers["location"] == "/"


def test_sign_out_needs_the_csrf_token(server: ServerProcess) -> None:
    client, csrf = signed_in(server)
    assert client.post("/logout", data={}).status_code == 403
    out = client.post("/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert session.COOKIE not in client.cookies


def test_pages_escape_what_users_typed_and_mask_secrets(server: ServerProcess,
                                                        tmp_path: Path) -> None:
    client, csrf = signed_in(server)
    headers = {session.CSRF_HEADER: csrf}
    made = client.post("/api/work-pools", headers=headers, json={
        "name": "esc", "description": "<script>alert(1)</script>"})
    assert made.status_code == 201
    applied = client.put("/api/deployments", headers=headers, json={
        "name": "d", "flow_name": "f", "pool_name": "esc", "command": ["true"],
        "job_variables": {"env": {"API_KEY": "very-secret-value-1"}}})
    assert applied.status_code in (200, 201), applied.text
    pool_page = client.get("/pools/esc").text
    assert "<script>alert(1)</script>" not in pool_page
    assert "&lt;script&gt;" in pool_page
    deployment_page = client.get("/deployments/f/d").text
    assert "very-secret-value-1" not in deployment_page
    page = client.get("/pools/esc")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_unknown_things_are_a_404_page(server: ServerProcess) -> None:
    client, _ = signed_in(server)
    for path in ("/pools/nope", "/runs/nope", "/deployments/a/b"):
        answer = client.get(path)
        assert answer.status_code == 404 and "<h1>Not found</h1>" in answer.text
