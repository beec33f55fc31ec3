"""Task definition bodies: built from the configuration, normalised, hashed (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import PermanentProviderError
from providers.ecs.config import parse_config
from providers.ecs.taskdef import (
    CONTENT_HASH_TAG,
    build_task_definition,
    clean_tags,
    content_hash,
    normalise,
    tag_value,
)

ROLE = "arn:aws:iam::123456789012:role/exec"


def body(image: str = "flows:1", cpu: int = 1024, memory: int = 2048,
         **config: Any) -> dict[str, Any]:
    cfg = parse_config({"execution_role_arn": ROLE, **config})
    return build_task_definition(cfg, image=image, cpu=cpu, memory=memory,
                                 region="eu-west-1", pool_name="etl")


def test_same_content_same_family_and_hash() -> None:
    first, second = body(), body()
    assert first == second
    digest = tag_value(first["tags"], CONTENT_HASH_TAG)
    assert digest is not None and first["family"] == f"pushpool-etl-{digest[:16]}"


@pytest.mark.parametrize("change", [
    {"image": "flows:2"}, {"cpu": 2048, "memory": 4096}, {"execution_role_arn": "other"},
    {"auto_deregister_task_definition": True}, {"tags": {"team": "a"}},
    {"cloudwatch_logs": {"group": "/other"}}, {"container_name": "main"},
])
def test_any_content_change_is_a_new_definition(change: dict[str, Any]) -> None:
    assert body(**change)["family"] != body()["family"]


def test_equivalent_spellings_normalise_alike() -> None:
    a = normalise({"family": "f", "cpu": "1 vCPU", "memory": "2 GB", "containerDefinitions": [
        {"name": "c", "image": "i", "environment": [{"name": "B", "value": "2"},
                                                   {"name": "A", "value": "1"}],
         "portMappings": [{"containerPort": 8080}], "mountPoints": []}],
        "requiresCompatibilities": ["FARGATE", "FARGATE"], "volumes": []})
    b = normalise({"family": "f", "cpu": 1024, "memory": "2048", "containerDefinitions": [
        {"name": "c", "image": "i", "essential": True, "environment": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
         "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}]}],
        "requiresCompatibilities": ["FARGATE"]})
    assert a == b and content_hash(a) == content_hash(b)


def test_body_is_what_fargate_needs() -> None:
    built = body(task_role_arn="ignored-here")
    assert built["networkMode"] == "awsvpc" and built["requiresCompatibilities"] == ["FARGATE"]
    assert (built["cpu"], built["memory"]) == ("1024", "2048")
    assert built["executionRoleArn"] == ROLE and "taskRoleArn" not in built
    [container] = built["containerDefinitions"]
    assert container["logConfiguration"]["options"]["awslogs-region"] == "eu-west-1"


def test_raw_fields_merge_and_sidecars_append() -> None:
    built = body(task_definition={
        "runtimePlatform": {"cpuArchitecture": "ARM64"},
        "containerDefinitions": [{"name": "pushpool", "stopTimeout": 60, "image": "raw"},
                                 {"name": "otel", "image": "otel:1"}],
        "tags": [{"key": "cost-center", "value": "42"}]})
    assert built["runtimePlatform"] == {"cpuArchitecture": "ARM64"}
    names = [c["name"] for c in built["containerDefinitions"]]
    assert names == ["pushpool", "otel"]
    main = built["containerDefinitions"][0]
    assert main["stopTimeout"] == 60 and main["image"] == "flows:1"  # the run's image wins
    assert tag_value(built["tags"], "cost-center") == "42"


def test_the_flow_container_reserves_what_the_task_has_left() -> None:
    # Stock moto fails RunTask on a container without memory or memoryReservation.
    [alone] = body(memory=4096, cpu=1024)["containerDefinitions"]
    assert alone["memoryReservation"] == 4096 and "memory" not in alone
    with_sidecar = body(task_definition={"containerDefinitions": [
        {"name": "otel", "image": "otel:1", "memoryReservation": 256}]})
    main, sidecar = with_sidecar["containerDefinitions"]
    assert (main["memoryReservation"], sidecar["memoryReservation"]) == (2048 - 256, 256)
    own = body(task_definition={"containerDefinitions": [{"name": "pushpool",
                                                          "memory": 1024}]})
    [container] = own["containerDefinitions"]
    assert container["memory"] == 1024 and "memoryReservation" not in container


def test_logs_disabled_means_no_log_configuration() -> None:
    built = body(cloudwatch_logs={"enabled": False})
    assert "logConfiguration" not in built["containerDefinitions"][0]


def test_tags_are_cleaned_to_what_ecs_accepts() -> None:
    tags = clean_tags({"aws:reserved": "x", "ok key": "v", "bad*key": "v!", "k" * 200: "v"})
    assert "aws:reserved" not in tags
    assert tags["ok key"] == "v" and tags["bad_key"] == "v_"
    assert all(len(k) <= 128 for k in tags)
    with pytest.raises(PermanentProviderError, match="ECS allows 50"):
        clean_tags({f"k{i}": "v" for i in range(51)})
