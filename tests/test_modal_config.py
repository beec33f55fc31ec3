"""modal:push pool template and configuration checks: every bad input is refused naming
its field, and the token secret is marked secret and never echoed."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from dispatcher import templates
from providers.base import JobSpec, PermanentProviderError
from providers.modal import PROVIDER
from providers.modal.config import MAX_TIMEOUT, default_base_job_template, validate_config
from providers.modal.connection import Connection, app_name_for
from providers.registry import KNOWN_PROVIDERS
from tests.providers.modal_harness import make_provider

GOOD: dict[str, Any] = {"credentials": {"token_id": "ak-1", "token_secret": "as-hush"},
                        "image": "python:3.12-slim"}


def test_the_registry_knows_modal_push() -> None:
    entry = KNOWN_PROVIDERS["modal:push"]
    assert (entry.module, entry.extra) == ("providers.modal", "modal")


def test_template_has_every_modal_variable_and_marks_the_secret() -> None:
    template = default_base_job_template()
    templates.validate_base_job_template(template)
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    props = template["variables"]["properties"]
    for name in ("credentials", "server_url", "app_name", "environment", "image",
                 "pip_packages", "secrets", "cpu", "memory", "gpu", "region", "timeout",
                 "cloud", "options"):
        assert name in props and f"{{{{ {name} }}}}" == template["job_configuration"][name]
    secret = props["credentials"]["properties"]["token_secret"]
    assert secret["format"] == "password" and secret["writeOnly"] is True
    assert props["timeout"]["default"] == MAX_TIMEOUT == 86400
    assert props["cpu"]["type"] == ["number", "null"]  # Modal takes fractional cores
    rendered = templates.render_job_configuration(
        template["job_configuration"], templates.schema_defaults(template["variables"]))
    validate_config(rendered)


def test_a_good_configuration_passes() -> None:
    cfg = validate_config({**GOOD, "cpu": 0.25, "memory": 512, "gpu": "A100-80GB:2",
                           "region": ["us-east", "us-west"], "secrets": ["db-creds"],
                           "pip_packages": ["pandas==2.2", "pushpool[modal]>=0.1"],
                           "options": {"workdir": "/app", "idle_timeout": 60}})
    assert cfg.cpu == 0.25 and cfg.gpu == "A100-80GB:2"


@pytest.mark.parametrize(("change", "field"), [
    ({"timeout": MAX_TIMEOUT + 1}, "timeout"),
    ({"timeout": 0}, "timeout"),
    ({"cpu": 0}, "cpu"),
    ({"memory": 0}, "memory"),
    ({"gpu": "two big ones"}, "gpu"),
    ({"app_name": "my app!"}, "app_name"),
    ({"app_name": "x" * 65}, "app_name"),
    ({"environment": "bad env"}, "environment"),
    ({"secrets": ["ok", "not ok"]}, r"secrets\[1\]"),
    ({"registry_secret": "a/b"}, "registry_secret"),
    ({"server_url": "api.modal.com"}, "server_url"),
    ({"python_version": "python3"}, "python_version"),
    ({"pip_packages": [""]}, r"pip_packages\[0\]"),
    ({"region": ""}, r"region\[0\]"),
    ({"options": {"timeout": 5}}, "options.timeout"),
    ({"options": {"name": "mine"}}, "options.name"),
    ({"options": {"not-a-name": 1}}, "options.not-a-name"),
    ({"command": []}, "command"),
    ({"env": {"1BAD": "x"}}, "env.1BAD"),
    ({"credentials": {"token_id": "ak-1"}}, "credentials.token_secret"),
    ({"credentials": {"token_id": " ", "token_secret": "as-x"}}, "credentials.token_id"),
    ({"surprise": True}, "surprise"),
])
def test_each_bad_input_is_refused_naming_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PROVIDER.validate_config({**GOOD, **change})


def test_refusals_never_echo_the_token_secret() -> None:
    with pytest.raises(ValueError) as caught:
        validate_config({"credentials": {"token_id": 5, "token_secret": ["as-hush"]}})
    assert "as-hush" not in str(caught.value)


def test_connection_repr_and_facts_repr_hide_the_secret() -> None:
    conn = Connection("http://x", "app", "", "template", "ak-1", "as-hush")
    assert "as-hush" not in repr(conn) and "as-hush" not in repr(conn.facts())
    assert conn.facts()["token_secret"] == "as-hush"  # kept for another process
    assert Connection.from_facts(conn.facts()).token_secret == "as-hush"


def test_app_names_are_valid_modal_names() -> None:
    assert app_name_for("etl") == "pushpool-etl"
    odd = app_name_for("team a/étl" + "x" * 80)
    assert len(odd) <= 64 and odd.startswith("pushpool-team-a-")
    assert odd != app_name_for("team a/étl" + "x" * 81)


async def test_submit_refuses_a_bad_configuration_as_permanent() -> None:
    provider = make_provider()
    spec = JobSpec("r1", "j", None, ["true"], {}, config={**GOOD, "gpu": "?"}, pool_name="p")
    with pytest.raises(PermanentProviderError, match="gpu"):
        await provider.submit(spec)
    await provider.close()
