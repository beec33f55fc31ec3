"""Deployment rules: job-variable overrides must fit the pool's schema, and the rendered
job configuration must be one the pool type's adapter accepts, before anything is stored;
secret parameters and job variables are stored sealed."""

from __future__ import annotations

from typing import Any

from dispatcher import sealing, store, templates
from dispatcher.errors import InvalidInput, NotFound
from dispatcher.models import Deployment, DeploymentApply
from dispatcher.operations.runs import validate_parameters
from dispatcher.store import Database
from providers import registry


def check_job_variables(pool_type: str, template: dict[str, Any],
                        job_variables: dict[str, Any], field: str = "job_variables") -> None:
    """The overrides fit the pool's schema and the provider accepts the rendered result."""
    schema = template.get("variables", {})
    try:
        templates.validate_job_variables(schema, job_variables, enforce_required=False,
                                         field=field)
        merged = templates.merge_job_variables(templates.schema_defaults(schema), job_variables)
        rendered = templates.render_job_configuration(template["job_configuration"], merged)
    except templates.TemplateError as exc:
        raise InvalidInput(exc.field, exc.message, exc.fix) from exc
    try:
        provider = registry.get_provider(pool_type)
    except registry.ProviderUnavailable as exc:
        raise InvalidInput("pool_name", str(exc)) from exc
    try:
        provider.validate_config(rendered)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(field, str(exc), "change the job variables or the pool's template"
                           ) from exc


async def apply_deployment(db: Database, data: DeploymentApply) -> tuple[Deployment, bool]:
    """Create the deployment or update the one with the same flow and name."""
    validate_parameters(data.parameter_schema, data.parameters, enforce_required=False)
    try:
        pool = await store.get_pool(db, data.pool_name)
    except NotFound:
        pool = None  # the store says so, with the way out, in its own transaction
    seal = sealing.sealer(db.secrets)
    sealed: dict[str, Any] = {
        "parameters": sealing.seal_parameters(data.parameters, data.parameter_schema, seal)}
    if data.parameter_schema:
        sealed["parameter_schema"] = sealing.seal_schema_defaults(
            data.parameter_schema, seal, field="parameter_schema")
    if pool is not None:
        template = sealing.open_json(pool.base_job_template, db.secrets)
        check_job_variables(pool.type, template, data.job_variables)
        sealed["job_variables"] = sealing.seal_job_variables(
            data.job_variables, template.get("variables", {}), seal)
    return await store.apply_deployment(db, data.model_copy(update=sealed))
