"""Claimed run -> provider-neutral JobSpec: merge job variables, render the template."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from dispatcher import templates
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


def build_job_spec(run: ClaimedRun, identity_env: IdentityEnv) -> JobSpec:
    """Raises templates.TemplateError if the pool's template no longer fits the overrides.

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
