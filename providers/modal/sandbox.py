"""One run's ``Sandbox.create`` call: its name, tags, image, secrets and resources.

Pure apart from building modal objects (``Image``, ``Secret``), which are lazy handles:
they make no RPC until the sandbox is created.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from collections.abc import Sequence
from typing import Any

from providers.base import JobSpec, job_name_for
from providers.modal.config import MAX_TIMEOUT, RESERVED_OPTIONS, ModalConfig

RUN_TAG, ATTEMPT_TAG = "pushpool-run-id", "pushpool-attempt"
POOL_TAG, DEPLOYMENT_TAG = "pushpool-pool", "pushpool-deployment-id"
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._:/=+@-]")


def sandbox_name(run_id: str, attempt: int) -> str:
    """Unique per (run, attempt) within the app: how a retried submit finds its sandbox.
    DNS-safe and ≤ 63 characters, so a valid Modal object name."""
    return job_name_for(run_id, attempt)


def _tag_value(value: str) -> str:
    safe = _TAG_UNSAFE.sub("-", value)
    if len(safe) > 60 or safe != value:
        safe = f"{safe[:50]}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"
    return safe


def tags_for(spec: JobSpec, cfg: ModalConfig) -> dict[str, str]:
    """The pool's labels, the run's labels, then the run, attempt, pool and deployment."""
    tags = {**cfg.labels, **spec.labels}
    tags.update({RUN_TAG: spec.run_id, ATTEMPT_TAG: str(spec.attempt),
                 POOL_TAG: spec.pool_name})
    if spec.deployment_id:
        tags[DEPLOYMENT_TAG] = spec.deployment_id
    return {str(k): _tag_value(str(v)) for k, v in tags.items()}


def build_image(cfg: ModalConfig, image: str | None) -> Any:
    import modal

    if image:
        secret = modal.Secret.from_name(cfg.registry_secret) if cfg.registry_secret else None
        built = modal.Image.from_registry(image, secret=secret)
    else:
        built = modal.Image.debian_slim(python_version=cfg.python_version)
    if cfg.pip_packages:
        built = built.pip_install(*cfg.pip_packages)
    return built


@functools.cache
def _create_parameters() -> frozenset[str]:
    import modal

    function = getattr(modal.Sandbox.create, "aio", modal.Sandbox.create)
    try:
        names = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a wrapper without a signature: accept, Modal checks
        return frozenset()
    return frozenset(n for n, p in names.items() if p.kind is p.KEYWORD_ONLY)


def handles_key(spec: JobSpec, cfg: ModalConfig) -> tuple[Any, ...]:
    """What makes two runs' image and named secrets the same ones (their cache key)."""
    return (spec.image or cfg.image, tuple(cfg.pip_packages), cfg.python_version,
            cfg.registry_secret, tuple(cfg.secrets))


def secret_handles(cfg: ModalConfig) -> tuple[Any, ...]:
    import modal

    return tuple(modal.Secret.from_name(name) for name in cfg.secrets)


def create_kwargs(spec: JobSpec, cfg: ModalConfig, app: Any, client: Any,
                  image: Any = None, secrets: Sequence[Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``Sandbox.create`` (the command goes positionally); ``image``
    and ``secrets`` are handles to reuse, made here when not given.

    Raises ValueError naming the field for what only the installed client can judge (an
    option it does not take)."""
    accepted = _create_parameters()
    for key in cfg.options:
        if key in RESERVED_OPTIONS:
            raise ValueError(f"options.{key}: pushpool sets this itself; use "
                             f"{RESERVED_OPTIONS[key]} instead")
        if accepted and key not in accepted:
            raise ValueError(f"options.{key}: the installed modal client's Sandbox.create "
                             "takes no such keyword; check the name (see Modal's "
                             "Sandbox.create reference)")
    env = {k: v for k, v in cfg.env.items() if v is not None}
    env.update(spec.env)
    cpu = cfg.cpu if cfg.cpu is not None else spec.cpu
    memory = spec.memory or cfg.memory
    kwargs: dict[str, Any] = {
        "app": app,
        "client": client,
        "name": sandbox_name(spec.run_id, spec.attempt),
        "tags": tags_for(spec, cfg),
        "image": image if image is not None else build_image(cfg, spec.image or cfg.image),
        "env": env,
        "secrets": list(secret_handles(cfg) if secrets is None else secrets),
        "timeout": min(spec.timeout or cfg.timeout or MAX_TIMEOUT, MAX_TIMEOUT),
    }
    for key, value in (("cpu", float(cpu) if cpu else None), ("memory", memory),
                       ("gpu", cfg.gpu), ("region", cfg.region), ("cloud", cfg.cloud)):
        if value is not None:
            kwargs[key] = value
    kwargs.update(cfg.options)
    return kwargs


def command_of(spec: JobSpec, cfg: ModalConfig) -> list[str]:
    command = spec.command or cfg.command
    if not command:
        raise ValueError("command: the run has no command; give the deployment a command "
                         "or an entrypoint")
    return [str(part) for part in command]
