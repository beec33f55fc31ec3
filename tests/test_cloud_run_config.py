"""cloud-run:push job configuration: the template, and each value Cloud Run would refuse
being refused at deployment time, naming the field and the valid range."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from dispatcher import templates
from providers.base import InfraRef, PermanentProviderError
from providers.cloud_run import PROVIDER
from providers.cloud_run.config import validate_config
from providers.cloud_run.connection import Connection
from tests.fakes.cloud_run import shared_fake
from tests.providers.cloud_run_harness import cloud_run_config, make_provider, spec_for

KEY = json.dumps({"type": "service_account", "project_id": "proj-123456",
                  "private_key": "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END "
                                 "PRIVATE KEY-----\n",
                  "client_email": "d@proj-123456.iam.gserviceaccount.com"})


def test_the_template_is_valid_and_marks_the_key_secret() -> None:
    template = PROVIDER.default_base_job_template()
    templates.validate_base_job_template(template)
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    props = template["variables"]["properties"]
    key = props["credentials"]["properties"]["service_account_key"]
    assert key["format"] == "password" and key["writeOnly"] is True
    assert props["region"]["default"] == "us-central1"
    assert props["timeout"]["maximum"] == 604800
    for name in ("project", "api_endpoint", "service_account_name", "cpu", "memory",
                 "max_retries", "task_count", "parallelism", "vpc_connector",
                 "env_from_secrets", "labels", "launch_stage", "keep_job"):
        assert name in props, name
    rendered = templates.render_job_configuration(template["job_configuration"],
                                                  templates.schema_defaults(template["variables"]))
    validate_config(rendered)  # the defaults are a valid configuration


@pytest.mark.parametrize("values", [
    {"cpu": "1000m", "memory": "512Mi"}, {"cpu": 2, "memory": "4Gi"}, {"cpu": "4", "memory": 2048},
    {"cpu": "500m", "memory": "512Mi"}, {"cpu": 8, "memory": "32Gi"}, {"timeout": 604800},
    {"max_retries": 10, "task_count": 3, "parallelism": 2},
    {"env_from_secrets": {"API_KEY": {"secret": "api-key", "version": "3"}}},
    {"labels": {"team": "data", "cost_center": "x-1"}},
    {"api_endpoint": "https://us-central1-run.googleapis.com"},
    {"credentials": {"kind": "service_account_key", "service_account_key": KEY}},
    {"vpc_connector": "projects/p/locations/us-central1/connectors/conn"},
    {"network_interfaces": [{"network": "default", "subnetwork": "default"}],
     "vpc_egress": "ALL_TRAFFIC"},
    {"service_account_name": "runner@my-project.iam.gserviceaccount.com"},
    {"launch_stage": "BETA", "job_body": {"annotations": {"a": "b"}}},
])
def test_good_values_are_accepted(values: dict[str, Any]) -> None:
    validate_config({"project": "my-project", **values})


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"memory": "512MB"}, "memory", "Mi, Gi"),
    ({"memory": "256Mi"}, "memory", "512Mi to 32Gi"),
    ({"memory": "64Gi"}, "memory", "512Mi to 32Gi"),
    ({"cpu": "3"}, "cpu", "1, 2, 4, 6 or 8"),
    ({"cpu": "lots"}, "cpu", "1000m"),
    ({"cpu": 1, "memory": "16Gi"}, "memory", "at least 4 vCPUs"),
    ({"cpu": 4, "memory": "1Gi"}, "memory", "at least 2048Mi"),
    ({"cpu": "500m", "memory": "1Gi"}, "memory", "at most 512Mi"),
    ({"timeout": 604801}, "timeout", "604800"),
    ({"max_retries": 11}, "max_retries", "10"),
    ({"task_count": 10001}, "task_count", "10000"),
    ({"task_count": 2, "parallelism": 3}, "parallelism", "task_count"),
    ({"labels": {"Team": "x"}}, "labels", "lowercase"),
    ({"labels": {"run.googleapis.com/x": "y"}}, "labels", "reserves"),
    ({"labels": {"team": "Data Team"}}, "labels", "label value"),
    ({"project": "X"}, "project", "project id"),
    ({"region": "mars"}, "region", "us-central1"),
    ({"api_endpoint": "http://run.example.com"}, "api_endpoint", "loopback"),
    ({"api_endpoint": "run.googleapis.com"}, "api_endpoint", "scheme"),
    ({"credentials": {"kind": "service_account_key"}}, "credentials.service_account_key",
     "needs"),
    ({"credentials": {"kind": "service_account_key", "service_account_key": "{not json"}},
     "credentials.service_account_key", "not JSON"),
    ({"credentials": {"kind": "magic"}}, "credentials.kind", ""),
    ({"service_account_name": "runner"}, "service_account_name", "email"),
    ({"vpc_connector": "c", "network_interfaces": [{"network": "n"}]}, "network_interfaces",
     "vpc_connector"),
    ({"env_from_secrets": {"1BAD": {"secret": "s"}}}, "env_from_secrets", "variable name"),
    ({"env_from_secrets": {"K": {"secret": "a/b"}}}, "env_from_secrets.K.secret", "secret"),
    ({"launch_stage": "SOON"}, "launch_stage", "GA"),
    ({"surprise": 1}, "surprise", "job_body"),
]


@pytest.mark.parametrize(("values", "field", "words"), BAD,
                         ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD)])
def test_each_bad_value_is_refused_naming_the_field(values: dict[str, Any], field: str,
                                                    words: str) -> None:
    with pytest.raises(ValueError) as caught:
        PROVIDER.validate_config({"project": "my-project", **values})
    message = str(caught.value)
    assert message.startswith(field), message
    assert words in message


def test_a_bad_key_is_never_echoed() -> None:
    bad = KEY.replace('"service_account"', '"user"')
    with pytest.raises(ValueError) as caught:
        validate_config({"credentials": {"kind": "service_account_key",
                                         "service_account_key": bad}})
    assert "SECRETKEYMATERIAL" not in str(caught.value)


def test_the_key_stays_out_of_reprs() -> None:
    conn = Connection("proj-123456", "us-central1", None, "service_account_key", KEY)
    ref = InfraRef("projects/p/locations/l/jobs/j/executions/e", conn.facts())
    assert "SECRETKEYMATERIAL" not in repr(conn)
    assert "SECRETKEYMATERIAL" not in repr(ref)
    assert "SECRETKEYMATERIAL" not in repr(dict(ref.connection))
    assert Connection.from_facts(json.loads(json.dumps(ref.to_json()))["connection"]) == conn


async def test_submit_refuses_a_bad_configuration_permanently() -> None:
    fake = shared_fake()
    provider = make_provider()
    try:
        with pytest.raises(PermanentProviderError, match="memory"):
            await provider.submit(spec_for(fake, "bad-1", memory="1TB"))
        spec = spec_for(fake, "bad-2")
        no_image = {**cloud_run_config(fake)}
        no_image.pop("image")
        with pytest.raises(PermanentProviderError, match="image"):
            await provider.submit(type(spec)(**{**spec.__dict__, "config": no_image}))
    finally:
        await provider.close()
