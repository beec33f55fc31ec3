"""Work-pool rules: a pool's type must be one the registry knows whose SDK is installed,
a pool without a template starts with its adapter's default, and the template's secrets
are stored sealed."""

from __future__ import annotations

from typing import Any

from dispatcher import sealing, store, templates
from dispatcher.errors import InvalidInput
from dispatcher.models import WorkPool, WorkPoolCreate, WorkPoolUpdate
from dispatcher.store import Database
from providers import registry
from providers.base import Provider


def check_pool_type(pool_type: str) -> Provider:
    """The adapter of a pool type; a 422 naming ``type`` if the type is unknown or its SDK
    is not installed here."""
    if not registry.is_known(pool_type):
        choices = ", ".join(sorted(registry.available_types()))
        raise InvalidInput("type", f"unknown pool type {pool_type!r}",
                           f"choose one of: {choices}")
    try:
        return registry.get_provider(pool_type)
    except registry.ProviderUnavailable as exc:
        raise InvalidInput("type", str(exc)) from exc


def default_base_job_template(pool_type: str) -> dict[str, Any]:
    """The template a new pool of this type starts with (422 naming ``type`` if unknown
    or if its SDK is not installed)."""
    return check_pool_type(pool_type).default_base_job_template()


async def create_pool(db: Database, data: WorkPoolCreate) -> WorkPool:
    """A pool and its default queue; its template is checked before anything is stored."""
    check_pool_type(data.type)
    template = data.base_job_template or default_base_job_template(data.type)
    field = "base_job_template" if data.base_job_template else "type"
    try:
        templates.validate_base_job_template(template)
    except templates.TemplateError as exc:
        raise InvalidInput(exc.field if field == "base_job_template" else field,
                           exc.message, exc.fix) from exc
    sealed = sealing.seal_template(template, sealing.sealer(db.secrets))
    return await store.create_pool(db, data.model_copy(update={"base_job_template": sealed}))


async def update_pool(db: Database, name: str, data: WorkPoolUpdate) -> WorkPool:
    """Change a pool; a new template is checked before anything is stored."""
    if data.base_job_template is not None:
        try:
            templates.validate_base_job_template(data.base_job_template)
        except templates.TemplateError as exc:
            raise InvalidInput(exc.field, exc.message, exc.fix) from exc
        sealed = sealing.seal_template(data.base_job_template, sealing.sealer(db.secrets))
        data = data.model_copy(update={"base_job_template": sealed})
    return await store.update_pool(db, name, data)
