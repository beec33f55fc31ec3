"""Base job templates: validation, job-variable merging and checking, rendering."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dispatcher.templates import (
    PLACEHOLDER,
    TemplateError,
    find_placeholders,
    merge_job_variables,
    render_job_configuration,
    resolve_job,
    schema_defaults,
    validate_base_job_template,
    validate_job_variables,
)


def make_template() -> dict[str, Any]:
    return {
        "job_configuration": {
            "image": "{{ image }}",
            "command": "{{ command }}",
            "env": "{{ env }}",
            "cpu": "{{ cpu }}",
            "memory": "{{memory}}",
            "name": "run-{{ name }}",
            "labels": {"team": "{{ team }}", "fixed": "yes"},
            "args": ["--verbose", "{{   extra_arg   }}"],
            "retries": 3,
            "spot": False,
        },
        "variables": {
            "type": "object",
            "properties": {
                "image": {"type": "string", "default": "python:3.11"},
                "command": {"type": "array", "items": {"type": "string"}},
                "env": {"type": "object", "additionalProperties": {"type": "string"},
                        "default": {"LOG_LEVEL": "info"}},
                "cpu": {"type": "integer", "minimum": 256, "default": 1024},
                "memory": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
                "name": {"type": "string"},
                "team": {"type": "string"},
                "extra_arg": {"type": "string", "minLength": 2},
                "timeout": {"type": "integer", "default": 3600},
                "region": {"type": "string", "enum": ["us", "eu"]},
                "size": {"$ref": "#/$defs/Size"},
            },
            "required": ["image"],
            "$defs": {"Size": {"type": "integer", "maximum": 10}},
        },
    }


def raises_template_error(fn: Any, *args: Any, **kwargs: Any) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        fn(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------------------- placeholders


def test_placeholder_pattern_accepts_spacing_and_rejects_bad_names() -> None:
    assert PLACEHOLDER.fullmatch("{{cpu}}")
    assert PLACEHOLDER.fullmatch("{{   cpu_2   }}")
    assert not PLACEHOLDER.fullmatch("{{ 1abc }}")
    assert not PLACEHOLDER.fullmatch("{{ a b }}")
    assert not PLACEHOLDER.fullmatch("{{ env.FOO }}")


def test_find_placeholders_walks_nested_values() -> None:
    config = {"a": ["x-{{ one }}-{{ two }}", {"b": "{{three}}"}], "c": 5, "d": "{{ one }}"}
    assert find_placeholders(config) == {"one", "two", "three"}
    assert find_placeholders("plain") == set()


# ---------------------------------------------------------------------------- pool templates


def test_valid_template_passes() -> None:
    validate_base_job_template(make_template())


def test_error_string_has_field_message_and_fix() -> None:
    err = raises_template_error(validate_base_job_template, [])
    assert err.field == "base_job_template"
    assert str(err) == f"{err.field}: {err.message}; {err.fix}"
    assert "job_configuration" in err.fix


@pytest.mark.parametrize("key", ["job_configuration", "variables"])
def test_missing_or_non_object_top_level_keys(key: str) -> None:
    template = make_template()
    del template[key]
    err = raises_template_error(validate_base_job_template, template)
    assert (err.field, err.message) == (f"base_job_template.{key}", "is missing")

    template = make_template()
    template[key] = ["not", "an", "object"]
    err = raises_template_error(validate_base_job_template, template, field="pool.template")
    assert (err.field, err.message) == (f"pool.template.{key}", "must be an object")


def test_variables_must_be_valid_json_schema() -> None:
    template = make_template()
    template["variables"]["properties"]["cpu"]["type"] = "strin"
    err = raises_template_error(validate_base_job_template, template)
    assert err.field == "base_job_template.variables.properties.cpu.type"
    assert "not valid JSON Schema" in err.message


@pytest.mark.parametrize("variables", [
    {"type": "array", "items": {}},
    {"type": "object"},
    {"properties": {"cpu": {"type": "integer"}}},
])
def test_variables_must_be_an_object_schema_with_properties(variables: dict[str, Any]) -> None:
    template = {"job_configuration": {}, "variables": variables}
    err = raises_template_error(validate_base_job_template, template)
    assert err.field == "base_job_template.variables"
    assert "'properties'" in err.message


def test_undeclared_placeholder_names_the_variable_and_path() -> None:
    template = make_template()
    del template["variables"]["properties"]["team"]
    err = raises_template_error(validate_base_job_template, template)
    assert err.field == "base_job_template.job_configuration.labels.team"
    assert err.message == "undeclared variable 'team'"
    assert "variables.properties" in err.fix


@pytest.mark.parametrize("bad", ["{{ cpu", "{{}}", "{{ 1abc }}", "{{ a b }}", "x-{{ cpu }}-{{ b",
                                 "cpu }}", "{{ env.FOO }}"])
def test_malformed_placeholders_name_the_json_path(bad: str) -> None:
    template = make_template()
    template["job_configuration"]["args"][1] = bad
    err = raises_template_error(validate_base_job_template, template)
    assert err.field == "base_job_template.job_configuration.args[1]"
    assert err.message.startswith("malformed placeholder")
    assert "{{ name }}" in err.fix


def test_defaults_must_match_their_property_schema_without_echoing_the_value() -> None:
    template = make_template()
    template["variables"]["properties"]["cpu"]["default"] = "s3cr3t-value"
    err = raises_template_error(validate_base_job_template, template)
    assert err.field == "base_job_template.variables.properties.cpu.default"
    assert "must be of type integer, got string" in err.message
    assert "s3cr3t-value" not in str(err)


def test_defaults_are_checked_through_refs_and_bounds() -> None:
    template = make_template()
    template["variables"]["properties"]["size"]["default"] = 11
    err = raises_template_error(validate_base_job_template, template)
    assert err.field == "base_job_template.variables.properties.size.default"
    assert "must be <= 10" in err.message

    template["variables"]["properties"]["size"]["default"] = 10
    validate_base_job_template(template)


# ---------------------------------------------------------------------------- job variables


def test_schema_defaults_skip_none_and_are_copies() -> None:
    schema = make_template()["variables"]
    defaults = schema_defaults(schema)
    assert defaults == {"image": "python:3.11", "env": {"LOG_LEVEL": "info"}, "cpu": 1024,
                        "timeout": 3600}
    defaults["env"]["X"] = "y"
    assert schema["properties"]["env"]["default"] == {"LOG_LEVEL": "info"}


def test_merge_later_layers_win_and_env_merges_key_wise() -> None:
    defaults = {"image": "a", "cpu": 1, "env": {"A": "1", "B": "2"}, "command": ["x"]}
    deployment = {"cpu": 2, "env": {"B": "deployment", "C": "3"}, "command": ["y", "z"]}
    run = {"env": {"C": None, "D": "4"}, "image": None}
    before = copy.deepcopy([defaults, deployment, run])

    merged = merge_job_variables(defaults, deployment, run)

    assert merged == {"cpu": 2, "env": {"A": "1", "B": "deployment", "D": "4"},
                      "command": ["y", "z"]}
    assert [defaults, deployment, run] == before
    merged["command"].append("mutated")
    assert deployment["command"] == ["y", "z"]


def test_merge_replaces_a_non_dict_env() -> None:
    assert merge_job_variables({"env": {"A": "1"}}, {"env": None}) == {}
    assert merge_job_variables({"env": None}, {"env": {"A": "1", "B": None}}) == {
        "env": {"A": "1"}}


def test_unknown_variables_are_rejected_with_the_accepted_names() -> None:
    schema = make_template()["variables"]
    err = raises_template_error(validate_job_variables, schema, {"cpus": 2, "cpu": 512},
                                enforce_required=False)
    assert err.field == "job_variables.cpus"
    assert err.message == "unknown variable 'cpus'"
    assert "did you mean 'cpu'?" in err.fix
    assert "command, cpu, env, extra_arg, image" in err.fix


def test_type_errors_name_the_field_and_expectation_but_not_the_value() -> None:
    schema = make_template()["variables"]
    err = raises_template_error(validate_job_variables, schema, {"cpu": "hunter2"},
                                enforce_required=False)
    assert err.field == "job_variables.cpu"
    assert err.message == "must be of type integer, got string"
    assert "hunter2" not in str(err)


def test_nested_errors_have_nested_paths() -> None:
    schema = make_template()["variables"]
    err = raises_template_error(validate_job_variables, schema, {"env": {"TOKEN": 12345}},
                                enforce_required=False, field="deployment.job_variables")
    assert err.field == "deployment.job_variables.env.TOKEN"
    assert "must be of type string" in err.message
    assert "12345" not in str(err)

    err = raises_template_error(validate_job_variables, schema, {"command": ["ok", 7]},
                                enforce_required=False)
    assert err.field == "job_variables.command[1]"


@pytest.mark.parametrize(("values", "field", "expected"), [
    ({"cpu": 128}, "job_variables.cpu", "must be >= 256"),
    ({"region": "mars"}, "job_variables.region", 'must be one of ["us", "eu"]'),
    ({"extra_arg": "x"}, "job_variables.extra_arg", "must have at least 2 characters"),
    ({"memory": "big"}, "job_variables.memory", "must match one of: integer, null"),
    ({"size": 99}, "job_variables.size", "must be <= 10"),
])
def test_schema_rules_are_explained(values: dict[str, Any], field: str, expected: str) -> None:
    schema = make_template()["variables"]
    err = raises_template_error(validate_job_variables, schema, values, enforce_required=False)
    assert (err.field, err.message) == (field, expected)


def test_required_only_when_enforced_and_none_means_unset() -> None:
    schema = make_template()["variables"]
    values = {"image": None, "cpu": None, "env": {"DROP_ME": None}}
    validate_job_variables(schema, values, enforce_required=False)
    err = raises_template_error(validate_job_variables, schema, values, enforce_required=True)
    assert err.field == "job_variables.image"
    assert err.message == "required variable 'image' is not set"
    validate_job_variables(schema, {"image": "x"}, enforce_required=True)


def test_job_variables_must_be_an_object() -> None:
    err = raises_template_error(validate_job_variables, {"properties": {}}, ["cpu"],
                                enforce_required=False)
    assert (err.field, err.message) == ("job_variables", "must be an object")


# ---------------------------------------------------------------------------- rendering


def test_whole_value_placeholders_keep_their_type() -> None:
    config = make_template()["job_configuration"]
    values = {"image": "img", "command": ["python", "x.py"], "env": {"A": "1"}, "cpu": 2048,
              "memory": 4096, "name": "n", "team": "data", "extra_arg": "-q"}
    rendered = render_job_configuration(config, values)
    assert rendered == {
        "image": "img", "command": ["python", "x.py"], "env": {"A": "1"}, "cpu": 2048,
        "memory": 4096, "name": "run-n", "labels": {"team": "data", "fixed": "yes"},
        "args": ["--verbose", "-q"], "retries": 3, "spot": False,
    }
    rendered["env"]["B"] = "2"
    rendered["command"].append("more")
    assert values["env"] == {"A": "1"} and values["command"] == ["python", "x.py"]


def test_embedded_placeholders_are_formatted_in() -> None:
    config = {"a": "cpu={{ cpu }} on={{ on }} env={{ env }} cmd={{ cmd }} {{ name }}!"}
    values = {"cpu": 1, "on": True, "env": {"A": "1", "B": 2}, "cmd": ["x", "y"], "name": "n"}
    assert render_job_configuration(config, values) == {
        "a": 'cpu=1 on=True env={"A":"1","B":2} cmd=["x","y"] n!'}


def test_unset_values_drop_whole_keys_and_items_and_blank_embedded_ones() -> None:
    config = {"keep": "{{ a }}", "drop": "{{ missing }}", "none": "{{ b }}",
              "items": ["x", "{{ missing }}", "{{ b }}", "{{ a }}"],
              "text": "pre-{{ missing }}-{{ b }}-post"}
    rendered = render_job_configuration(config, {"a": 0, "b": None})
    assert rendered == {"keep": 0, "items": ["x", 0], "text": "pre---post"}


def test_rendering_does_not_expand_placeholders_inside_values() -> None:
    config = {"name": "{{ name }}", "label": "x-{{ name }}", "n": "{{ n }}"}
    values = {"name": "{{ n }}", "n": 5}
    assert render_job_configuration(config, values) == {
        "name": "{{ n }}", "label": "x-{{ n }}", "n": 5}


def test_render_leaves_the_input_unchanged() -> None:
    config = make_template()["job_configuration"]
    before = copy.deepcopy(config)
    render_job_configuration(config, {"cpu": 1})
    assert config == before


# ---------------------------------------------------------------------------- resolve


def test_resolve_layers_defaults_deployment_and_run() -> None:
    template = make_template()
    deployment = {"cpu": 2048, "env": {"APP": "deploy", "LOG_LEVEL": "debug"}, "team": "data"}
    run = {"env": {"APP": None, "RUN": "1"}, "command": ["python", "flow.py"]}

    merged, rendered = resolve_job(template, deployment, run)

    assert merged == {"image": "python:3.11", "cpu": 2048, "timeout": 3600, "team": "data",
                      "env": {"LOG_LEVEL": "debug", "RUN": "1"},
                      "command": ["python", "flow.py"]}
    # timeout has no placeholder but still reaches the dispatcher (Prefect #20131).
    assert "timeout" not in rendered and merged["timeout"] == 3600
    assert rendered == {
        "image": "python:3.11", "command": ["python", "flow.py"],
        "env": {"LOG_LEVEL": "debug", "RUN": "1"}, "cpu": 2048, "name": "run-",
        "labels": {"team": "data", "fixed": "yes"}, "args": ["--verbose"], "retries": 3,
        "spot": False,
    }
    assert template == make_template()


def test_resolve_rejects_bad_deployment_and_run_variables() -> None:
    err = raises_template_error(resolve_job, make_template(), {"gpu": 1}, {})
    assert err.field == "job_variables.gpu"
    err = raises_template_error(resolve_job, make_template(), {}, {"cpu": "many"})
    assert err.field == "job_variables.cpu"
    err = raises_template_error(resolve_job, make_template(), {}, {"image": None})
    assert err.field == "job_variables.image" and "required" in err.message


def test_resolve_rejects_a_broken_template() -> None:
    template = make_template()
    template["job_configuration"]["x"] = "{{ nope }}"
    err = raises_template_error(resolve_job, template, {}, {})
    assert err.field == "base_job_template.job_configuration.x"
