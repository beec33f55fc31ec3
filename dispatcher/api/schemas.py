"""Request and response shapes that exist only on the wire (the domain ones are in models.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatcher.models import (
    Deployment,
    InputModel,
    Name,
    Parameters,
    _check_name,
)


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str
    fix: str | None = None


class Error(BaseModel):
    """Every 4xx and 5xx answer has this shape."""

    error: str = Field(description="Machine-readable code, e.g. invalid_input, not_found")
    message: str = Field(description="One line saying what was wrong and how to fix it")
    details: list[ErrorDetail] = Field(default_factory=list)


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "down"]
    version: str


class PoolType(BaseModel):
    type: str
    description: str
    extra: str | None = Field(default=None,
                              description="The pip extra that brings its SDK: pushpool[extra]")
    installed: bool = Field(description="Whether its SDK is installed on this server; pools "
                                        "of a type that is not cannot be created")


class DeploymentApplied(BaseModel):
    deployment: Deployment
    created: bool


class WebhookPayload(BaseModel):
    """Any JSON object; ``parameters``, when present, become the run's parameters."""

    model_config = ConfigDict(extra="allow")

    parameters: Parameters = Field(default_factory=dict)


# ---------------------------------------------------------------------------- provisioning


class ProvisionOptionInfo(BaseModel):
    """One option a pool type's provisioning takes (never a secret: the server's own
    cloud identity brings those)."""

    name: str
    help: str
    kind: Literal["text", "int", "bool", "list"]
    choices: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)


class ProvisionPlanRequest(InputModel):
    name: Name = Field(description="The work pool to be made")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="By the names the type declares")
    base_job_template: dict[str, Any] | None = Field(
        default=None, description="The template the pool will have; its variable "
                                  "defaults for option names count as options")

    _name = field_validator("name")(lambda v: _check_name(v, "work pool"))


class PlanStep(BaseModel):
    resource: str
    name: str
    action: str = Field(description="create, or exists (nothing to do)")
    detail: str = ""


class ProvisionPlanView(BaseModel):
    """What applying would do; nothing was changed to find out."""

    target: str = Field(description="Where, e.g. the account and region")
    steps: list[PlanStep]
    changes: int = Field(description="How many steps create something")
    options: dict[str, Any] = Field(description="The options the plan was made with")
    digest: str = Field(description="Send it back as provision.confirm_plan to apply "
                                    "this plan; refused (409) if the plan changed")
