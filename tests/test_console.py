"""The web console end to end: a real server, Debian's chromium driven by Playwright.

Every action goes through the page as a user would (forms, buttons, the keyboard); the
assertions read what the page shows and, where it matters, what the API then holds.
Screenshots of the main pages go to $PUSHPOOL_SCREENSHOTS_DIR when set (README's come
from there), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.pushpool_server import ServerProcess, free_port

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():  # CI installs it (.ci/run); a laptop may not have it
    if os.environ.get("CI"):
        raise RuntimeError("chromium is not installed: apt-get install chromium")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000
TOKEN = "console-test-token-5f2c"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("PUSHPOOL_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


class Page:
    """A browser page that fails the test on any error in the browser's console, and on
    any page or asset the server does not serve (the API's 4xx answers are expected: the
    browser logs each as "Failed to load resource", which is why those are left out)."""

    def __init__(self, browser: Any, base: str, width: int = 1280) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900},
                                           base_url=base)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text)
                     if m.type == "error" and not m.text.startswith("Failed to load resource")
                     else None)
        self.page.on("response", lambda r: self.errors.append(f"{r.status} {r.url}")
                     if r.status >= 400 and "/api/" not in r.url
                     and not (r.status == 401 and r.url.endswith("/login")) else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"errors in the browser console: {self.errors}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "home")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def put_deployment(api: httpx.Client, name: str, command: list[str],
                   schema: dict[str, Any] | None = None) -> None:
    answer = api.put("/api/deployments", json={
        "name": name, "flow_name": "greet", "pool_name": "laptop", "command": command,
        "parameter_schema": schema, "parameters": {"name": "world"}})
    assert answer.status_code in (200, 201), answer.text


def test_console_journey(browser: Any, server: ServerProcess, shots: Path) -> None:
    view = Page(browser, server.url)
    page = view.page
    # A pool from the form, its template fields generated from the type's JSON Schema.
    page.goto("/pools/new")
    page.locator("#pool-name").fill("laptop")
    page.get_by_label("Type", exact=True).select_option("process")
    page.locator("[data-fields] [data-kind]").first.wait_for()
    page.screenshot(path=shots / "pool-create.png", full_page=True)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url("**/pools/laptop")
    assert "Work pool laptop" in page.locator("h1").inner_text()

    api = httpx.Client(base_url=server.url, timeout=10)
    schema = {"type": "object", "properties": {"name": {"type": "string", "title": "name"}},
              "required": ["name"]}
    put_deployment(api, "hello", [sys.executable, "-c",
                                  "import os, json; p = json.loads(os.environ.get("
                                  "'PUSHPOOL_PARAMETERS', '{}')); print('hello', p['name'])"],
                   schema)
    put_deployment(api, "slow", [sys.executable, "-c", "import time; time.sleep(60)"])

    # Run it from the Run form with a parameter, by keyboard; watch it complete with logs.
    page.goto("/deployments/greet/hello")
    page.screenshot(path=shots / "deployment.png", full_page=True)
    field = page.locator("[data-parameters] input[name=name]")
    field.fill("console")
    field.press("Enter")
    page.wait_for_url("**/runs/*")
    page.locator("[data-state=COMPLETED]").wait_for()
    page.locator("[data-logs]", has_text="hello console").wait_for()
    # The process provider's job ids are paths of this machine: masked in the picture.
    page.screenshot(path=shots / "run.png", full_page=True,
                    mask=[page.locator("[data-infra]"), page.locator("ol.timeline small")],
                    mask_color="#d8dde3")
    run_id = page.url.rsplit("/", 1)[-1]
    assert api.get(f"/api/runs/{run_id}").json()["parameters"] == {"name": "console"}

    # A bad job variable: the API's own message, and no run made.
    before = len(api.get("/api/runs").json())
    page.goto("/deployments/greet/hello")
    page.locator("[data-variables] [name=env]").fill("not json")
    page.get_by_role("button", name="Start the run").click()
    message = page.locator("form [data-message]")
    message.wait_for(state="visible")
    assert "env" in message.inner_text()
    page.locator("[data-variables] [name=env]").fill('"a string"')
    page.get_by_role("button", name="Start the run").click()
    page.wait_for_function(
        "() => document.querySelector('form [data-message]').textContent.includes('env')")
    assert len(api.get("/api/runs").json()) == before

    # Cancel another from its page.
    created = api.post("/api/deployments/greet/slow/runs", json={}).json()
    page.goto(f"/runs/{created['id']}")
    page.locator("[data-state=RUNNING]").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    page.locator("[data-state=CANCELLED]").wait_for()

    # Edit the pool: a limit saved, then a bad one refused with the API's message.
    page.goto("/pools/laptop")
    page.get_by_label("Concurrency limit").fill("3")
    page.get_by_role("button", name="Save").click()
    page.locator("dd", has_text="3").first.wait_for()
    assert api.get("/api/work-pools/laptop").json()["concurrency_limit"] == 3
    page.get_by_label("Concurrency limit").fill("-1")
    page.get_by_role("button", name="Save").click()
    page.locator("form [data-message]").wait_for(state="visible")
    assert "concurrency_limit" in page.locator("form [data-message]").inner_text()
    assert api.get("/api/work-pools/laptop").json()["concurrency_limit"] == 3

    # The other pages, live list included; then at a phone's width nothing overflows.
    for path, name in (("/", "dashboard"), ("/pools", "pools"), ("/runs", "runs"),
                       ("/pools/laptop", "pool")):
        page.goto(path)
        page.screenshot(path=shots / f"{name}.png", full_page=True)
    page.goto("/runs?state=COMPLETED")
    assert page.locator("tbody tr a[href^='/runs/']").count() >= 1
    page.get_by_label("Created").select_option("hour")  # the filter form submits itself
    page.wait_for_url("**since=hour**")
    assert page.locator("tbody tr a[href^='/runs/']").count() >= 1
    view.close()

    phone = Page(browser, server.url, width=390)
    for path in ("/", "/pools", "/runs", f"/runs/{run_id}", "/deployments/greet/hello"):
        phone.page.goto(path)
        wide = phone.page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"{path} is {wide} px wide at 390 px"
    phone.page.goto("/runs")
    phone.page.screenshot(path=shots / "runs-phone.png", full_page=True)
    phone.close()


def test_sign_in_and_out_with_a_token(browser: Any, tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "home", env={"PUSHPOOL_API_TOKEN": TOKEN})
    srv.start()
    try:
        view = Page(browser, srv.url)
        page = view.page
        page.goto("/pools")
        page.wait_for_url(re.compile(r"/login\?next=(%2F|/)pools$"))
        page.get_by_label("API token").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        assert "not the server's API token" in page.locator("[role=alert]").last.inner_text()
        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/pools")
        cookie = next(c for c in view.context.cookies() if c["name"] == "pushpool_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # Signed in, the page's buttons reach the API with the cookie and the CSRF token.
        headers = {"Authorization": f"Bearer {TOKEN}"}
        httpx.post(f"{srv.url}/api/work-pools", json={"name": "p1"}, headers=headers)
        page.goto("/pools/p1")
        page.get_by_role("button", name="Pause pool").click()
        page.get_by_role("button", name="Resume pool").wait_for()
        assert httpx.get(f"{srv.url}/api/work-pools/p1", headers=headers).json()["paused"]
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/login")
        page.goto("/runs")
        page.wait_for_url(re.compile(r"/login\?next=(%2F|/)runs$"))
        view.close()
    finally:
        srv.stop()


CROSS_SITE_PAGE = """<!doctype html><html><body>
<form id="f" method="post" enctype="text/plain" action="{target}">
<input name='{{"parameters": {{}}, "name": "x' value='y"}}'></form>
<form id="g" method="post" action="{base}/logout"></form>
<script>document.getElementById("f").submit();</script></body></html>"""


def test_a_cross_site_form_post_does_nothing(browser: Any, server: ServerProcess,
                                            tmp_path: Path) -> None:
    api = httpx.Client(base_url=server.url, timeout=10)
    assert api.post("/api/work-pools", json={"name": "laptop"}).status_code == 201
    put_deployment(api, "hello", [sys.executable, "-c", "print('hi')"])
    # Another site: a page served from a different origin (another port) posts a form.
    other = tmp_path / "other-site"
    other.mkdir()
    target = f"{server.url}/api/deployments/greet/hello/runs"
    (other / "index.html").write_text(CROSS_SITE_PAGE.format(target=target, base=server.url))
    import http.server
    import threading
    from functools import partial

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(other))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        context = browser.new_context()
        page = context.new_page()
        with page.expect_response(lambda r: r.url == target) as answer:
            page.goto(f"http://localhost:{site.server_address[1]}/index.html")
        assert answer.value.status in (403, 415)
        context.close()
    finally:
        site.shutdown()
    assert api.get("/api/runs").json() == []
