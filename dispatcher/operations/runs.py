"""Run rules: a new run's parameters must fit its flow's schema and its job-variable
overrides the pool's; its job configuration is rendered here, inside the store's creating
transaction (``store.create_run(..., prepare=prepare_run)``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema

from dispatcher import store, templates
from dispatcher.errors import InvalidInput
from dispatcher.models import MAX_SECONDS, Run, RunCreate
from dispatcher.store import Database
from dispatcher.store.runs import PreparedRun, RunTarget


def validate_parameters(schema: dict[str, Any] | None, parameters: dict[str, Any],
                        *, enforce_required: bool) -> None:
    if not schema:
        return
    checked = dict(schema)
    if not enforce_required:
        checked.pop("required", None)
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(checked).iter_errors(parameters))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path = missing or path
        field = f"parameters.{path}" if path else "parameters"
        raise InvalidInput(field, error.message, "pass a value that matches the flow's signature")


def resolve_run_job(template: dict[str, Any], deployment_vars: dict[str, Any],
                    run_vars: dict[str, Any]) -> dict[str, Any]:
    """Render the run's job configuration; a bad override is a 422 naming its field."""
    try:
        if run_vars:  # nothing in an empty override can be wrong (and this is the hot path)
            templates.validate_job_variables(template.get("variables", {}), run_vars,
                                             enforce_required=False, field="job_variables")
        _, rendered = templates.resolve_job(template, deployment_vars, run_vars)
    except templates.TemplateError as exc:
        raise InvalidInput(exc.field, exc.message, exc.fix) from exc
    return rendered


def check_scheduled_time(when: datetime | None, now: datetime | None = None) -> None:
    """A run may be started up to ten years ahead (MAX_SECONDS, the intervals' limit too):
    a time past that is a typo (9999-12-31), not a plan."""
    if when is None or when.tzinfo is None:  # None: now; no zone: the store says so
        return
    if when - (now or datetime.now(UTC)) > timedelta(seconds=MAX_SECONDS):
        raise InvalidInput("scheduled_time", f"{when.isoformat()} is more than ten years "
                           "ahead", "give a time within the next ten years")


def prepare_run(target: RunTarget, data: RunCreate) -> PreparedRun:
    """The run's parameters (the deployment's, overridden by the run's) and its rendered
    job configuration; a bad value is a 422 naming its field."""
    check_scheduled_time(data.scheduled_time)
    parameters = {**target.parameters, **data.parameters}
    validate_parameters(target.parameter_schema, parameters, enforce_required=True)
    rendered = resolve_run_job(target.base_job_template, target.job_variables,
                               data.job_variables)
    return PreparedRun(parameters, rendered)


async def create_run(db: Database, deployment_ref: str, data: RunCreate, *,
                     idempotency_key: str | None = None,
                     resubmitted_from: str | None = None) -> tuple[Run, bool]:
    """A run of a deployment; the same idempotency key returns the same run."""
    return await store.create_run(db, deployment_ref, data, prepare=prepare_run,
                                  idempotency_key=idempotency_key,
                                  resubmitted_from=resubmitted_from)


async def resubmit_run(db: Database, run_id: str) -> tuple[Run, bool]:
    """A finished run started again as a new, linked run (dead letters, say)."""
    return await store.resubmit_run(db, run_id, prepare=prepare_run)
