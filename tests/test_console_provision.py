"""The console's "Provision infrastructure" for an ecs:push pool, in Debian's chromium,
against a real server whose own AWS identity (its environment) points at moto: a bad
option shows the API's message, the plan is shown and makes nothing, "Apply and create"
makes it and opens the new pool with the filled defaults, and a plan that changed since it
was shown is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.ecs_testing import REGION, Aws
from tests.fakes.pushpool_server import ServerProcess
from tests.test_console import Page, browser, shots  # noqa: F401 (fixtures)

pytest_plugins = ["tests.ecs_fixtures"]
pytestmark = pytest.mark.slow


@pytest.fixture
def server(ecs_aws: Aws, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "home")  # inherits AWS_* (moto) from ecs_aws
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def cluster_active(aws: Aws, pool: str) -> bool:
    found = aws.client("ecs").describe_clusters(clusters=[f"pushpool-{pool}"])["clusters"]
    return bool(found) and found[0]["status"] == "ACTIVE"


def open_form(view: Page, pool: str, aws: Aws) -> Any:
    page = view.page
    page.goto("/pools/new")
    page.locator("#pool-name").fill(pool)
    page.get_by_label("Type", exact=True).select_option("ecs:push")
    page.get_by_label("Provision infrastructure").check()
    options = page.locator("[data-provision-fields]")
    options.locator("[name=region]").fill(REGION)
    options.locator("[name=endpoint_url]").fill(aws.server.url)
    return page


def test_provision_from_the_console(browser: Any, server: ServerProcess,  # noqa: F811
                                    ecs_aws: Aws, shots: Path) -> None:  # noqa: F811
    api = httpx.Client(base_url=server.url, timeout=10)
    pool = f"web-{uuid.uuid4().hex[:8]}"
    view = Page(browser, server.url)
    page = open_form(view, pool, ecs_aws)
    apply = page.get_by_role("button", name="Apply and create")
    assert apply.is_disabled()  # nothing can be applied before the plan is shown

    # A bad option: the API's words, the CLI's too.
    page.locator("[data-provision-fields] [name=log_retention_days]").fill("thirty")
    page.get_by_role("button", name="Show the plan").click()
    message = page.locator("form [data-message]")
    message.wait_for(state="visible")
    assert "log_retention_days: 'thirty' is not a whole number" in message.inner_text()

    page.locator("[data-provision-fields] [name=log_retention_days]").fill("7")
    page.get_by_role("button", name="Show the plan").click()
    page.locator("ul.plan li", has_text=f"create ecs cluster: pushpool-{pool}").wait_for()
    assert page.locator("ul.plan li[data-step=create]").count() >= 3
    assert not cluster_active(ecs_aws, pool)  # the plan made nothing
    assert api.get(f"/api/work-pools/{pool}").status_code == 404
    page.screenshot(path=shots / "pool-provision.png", full_page=True)

    apply.click()
    page.wait_for_url(f"**/pools/{pool}")
    assert cluster_active(ecs_aws, pool)
    made = api.get(f"/api/work-pools/{pool}").json()
    defaults = {k: v.get("default") for k, v in
                made["base_job_template"]["variables"]["properties"].items()}
    assert defaults["cluster"].endswith(f"pushpool-{pool}")
    assert defaults["execution_role_arn"].startswith("arn:aws:iam::")
    assert made["provisioned"]["options"]["log_retention_days"] == 7

    # Another pool whose cluster someone makes after the plan was shown: refused.
    other = f"web-{uuid.uuid4().hex[:8]}"
    page = open_form(view, other, ecs_aws)
    page.get_by_role("button", name="Show the plan").click()
    page.locator("ul.plan li", has_text=f"create ecs cluster: pushpool-{other}").wait_for()
    ecs_aws.client("ecs").create_cluster(clusterName=f"pushpool-{other}")
    page.get_by_role("button", name="Apply and create").click()
    page.wait_for_function("() => document.querySelector('form [data-message]')"
                           ".textContent.includes('plan changed')")
    assert api.get(f"/api/work-pools/{other}").status_code == 404
    assert page.get_by_role("button", name="Apply and create").is_disabled()
    view.close()
