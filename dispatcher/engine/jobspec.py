"""Claimed run -> provider-neutral JobSpec: open the stored secrets, merge job variables,
render the template. The adapter gets clear values; what is stored of the job again (its
configuration) is sealed."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

from dispatcher import sealing, templates
from dispatcher.crypto import SecretBox
from dispatcher.store import ClaimedRun
from providers.base import JobSpec, Quantity, job_name_for

# The in-container runtime (`pushpool execute`) is what runs an entrypoint deployment.
EXECUTE_COMMAND = ["pushpool", "execute"]
# A process pool runs on this host: the runtime of this very interpreter, whatever the
# job's PATH says (the dispatcher may run from a virtualenv that is not on it).
PROCESS_EXECUTE_COMMAND = [sys.executable, "-m", "dispatcher.runtime"]


def execute_command(pool_type: str) -> list[str]:
    """The runtime's argv for an entrypoint deployment in a pool of this type."""
    return list(PROCESS_EXECUTE_COMMAND if pool_type == "process" else EXECUTE_COMMAND)


IdentityEnv = Callable[[ClaimedRun, int | None], dict[str, str]]


@dataclasses.dataclass(frozen=True)
class BuiltJob:
    spec: JobSpec  # clear: what the adapter is given
    stored_configuration: dict[str, Any]  # spec.config with its secrets sealed


def build_job(run: ClaimedRun, identity_env: IdentityEnv, box: SecretBox) -> BuiltJob:
    """The run's JobSpec from its stored (sealed) values, and its configuration to store.
    Raises templates.TemplateError as ``build_job_spec`` does, SecretDecryptError if a
    stored secret does not open with ``box``."""
    template = sealing.open_json(run.base_job_template, box)
    deployment_vars = sealing.open_json(run.deployment_job_variables, box)
    run_vars = sealing.open_json(run.run_job_variables, box)
    opened = dataclasses.replace(
        run, base_job_template=template, deployment_job_variables=deployment_vars,
        run_job_variables=run_vars, parameters=sealing.open_json(run.parameters, box))
    spec = build_job_spec(opened, identity_env)
    schema = template.get("variables", {})
    merged = templates.merge_job_variables(templates.schema_defaults(schema),
                                           deployment_vars, run_vars)
    stored = sealing.seal_job_configuration(spec.config, merged, schema,
                                            sealing.sealer(box))
    return BuiltJob(spec, stored)


def build_job_spec(run: ClaimedRun, identity_env: IdentityEnv) -> JobSpec:
    """Raises templates.TemplateError if the pool's template no longer fits the overrides.
    ``run`` holds clear values (``build_job`` opens the stored ones).

    ``identity_env(run, timeout)`` gives the env that names the run to its job (API URL,
    run token valid until the timeout has passed)."""
    values, config = templates.resolve_job(run.base_job_template, run.deployment_job_variables,
                                           run.run_job_variables)
    timeout = _int_or_none(values.get("timeout"))
    command = values.get("command") or run.command or (
        execute_command(run.pool_type) if run.entrypoint else None)
    if not command:
        raise templates.TemplateError("command", "the run has no command to execute",
                                      "give the deployment a command or an entrypoint")
    env = {k: str(v) for k, v in (values.get("env") or {}).items() if v is not None}
    env.update(identity_env(run, timeout))
    env.update({
        "PUSHPOOL_RUN_ID": run.run_id,
        "PUSHPOOL_RUN_NAME": run.name,
        "PUSHPOOL_RUN_ATTEMPT": str(run.attempt),
        "PUSHPOOL_PARAMETERS": json.dumps(run.parameters, separators=(",", ":")),
    })
    if run.deployment_name:
        env["PUSHPOOL_DEPLOYMENT"] = run.deployment_name
    if run.entrypoint:
        env["PUSHPOOL_ENTRYPOINT"] = run.entrypoint
    if run.source:
        env["PUSHPOOL_SOURCE"] = run.source
    labels = {str(k): str(v) for k, v in (values.get("labels") or {}).items()}
    labels.update({"pushpool-run-id": run.run_id, "pushpool-pool": run.pool_name})
    if run.deployment_id:
        labels["pushpool-deployment-id"] = run.deployment_id
    return JobSpec(
        run_id=run.run_id,
        job_name=job_name_for(run.run_id, run.attempt),
        image=values.get("image") or run.image,
        command=[str(part) for part in command],
        env=env,
        cpu=_quantity_or_none("cpu", values.get("cpu")),
        memory=_quantity_or_none("memory", values.get("memory")),
        timeout=timeout,
        labels=labels,
        config=config,
        attempt=run.attempt,
        pool_name=run.pool_name,
        deployment_id=run.deployment_id,
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _quantity_or_none(name: str, value: Any) -> Quantity | None:
    """The value as the job variables hold it: its units are the pool type's, so only the
    adapter can read it (casting here turned "512Mi" into an error and 1.5 GB into 1)."""
    if value is None or (isinstance(value, (int, float, str)) and not isinstance(value, bool)):
        return value
    raise templates.TemplateError(name, f"{type(value).__name__} is not a {name} value",
                                  f"give {name} as a number or a string such as the pool "
                                  "type's template describes")
