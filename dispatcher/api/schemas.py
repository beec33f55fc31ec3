"""Request and response shapes that exist only on the wire (the domain ones are in models.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.models import Deployment, Parameters


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
