"""Run rules: a new run's parameters must fit its flow's schema and its job-variable
overrides the pool's; its job configuration is rendered here, inside the store's creating
transaction (``store.create_run(..., prepare=run_preparer(box))``), from the stored values
opened, and what is secret in the run is sealed again before it is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema

from dispatcher import sealing, store, templates
from dispatcher.crypto import SecretBox, SecretDecryptError
from dispatcher.errors import InvalidInput
from dispatcher.models import MAX_SECONDS, Run, RunCreate
from dispatcher.store import Database
from dispatcher.store.runs import PreparedRun, RunPreparer, RunTarget


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


def prepare_run(target: RunTarget, data: RunCreate, box: SecretBox) -> PreparedRun:
    """The run's parameters (the deployment's, overridden by the run's), its own job
    variables and its rendered job configuration, secrets sealed; a bad value is a 422
    naming its field."""
    check_scheduled_time(data.scheduled_time)
    template = sealing.open_json(target.base_job_template, box)
    deployment_vars = sealing.open_json(target.job_variables, box)
    run_params = _opened_input(data.parameters, "parameters", box)
    run_vars = _opened_input(data.job_variables, "job_variables", box)
    parameters = {**sealing.open_json(target.parameters, box), **run_params}
    validate_parameters(target.parameter_schema, parameters, enforce_required=True)
    rendered = resolve_run_job(template, deployment_vars, run_vars)
    seal = sealing.sealer(box)
    schema = template.get("variables", {})
    merged = templates.merge_job_variables(templates.schema_defaults(schema),
                                           deployment_vars, run_vars)
    return PreparedRun(
        parameters=sealing.seal_parameters(parameters, target.parameter_schema, seal),
        job_configuration=sealing.seal_job_configuration(rendered, merged, schema, seal),
        job_variables=sealing.seal_job_variables(run_vars, schema, seal))


def _opened_input(values: dict[str, Any], field: str, box: SecretBox) -> dict[str, Any]:
    """A caller's values, opened where they hold sealed text (a resubmitted run's)."""
    try:
        return dict(sealing.open_json(values, box))
    except SecretDecryptError:
        raise InvalidInput(field, "holds a value that starts like a sealed secret "
                           "('enc:v1:') but no key of this server opens it",
                           "send the value in clear") from None


def run_preparer(box: SecretBox) -> RunPreparer:
    return lambda target, data: prepare_run(target, data, box)


async def create_run(db: Database, deployment_ref: str, data: RunCreate, *,
                     idempotency_key: str | None = None,
                     resubmitted_from: str | None = None) -> tuple[Run, bool]:
    """A run of a deployment; the same idempotency key returns the same run."""
    return await store.create_run(db, deployment_ref, data,
                                  prepare=run_preparer(db.secrets),
                                  idempotency_key=idempotency_key,
                                  resubmitted_from=resubmitted_from)


async def resubmit_run(db: Database, run_id: str) -> tuple[Run, bool]:
    """A finished run started again as a new, linked run (dead letters, say)."""
    return await store.resubmit_run(db, run_id, prepare=run_preparer(db.secrets))
