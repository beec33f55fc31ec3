"""Pool type -> adapter module, imported on first use (fsspec's registry, in small).

A pool type maps to a dotted import path and the pip extra that brings its SDK. Nothing
is imported until a pool of that type is used, so ``pushpool --help`` and a cold start
never pay for four cloud SDKs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from providers.base import Provider


@dataclass(frozen=True)
class ProviderEntry:
    module: str
    extra: str | None  # the ``pip install pushpool[extra]`` that brings its SDK
    description: str


KNOWN_PROVIDERS: dict[str, ProviderEntry] = {
    "process": ProviderEntry("providers.process", None, "Local child process (embedded default)"),
    "ecs:push": ProviderEntry("providers.ecs", "aws", "AWS ECS Fargate"),
    "azure-container-instance:push": ProviderEntry("providers.aci", "azure",
                                                   "Azure Container Instances"),
    "cloud-run:push": ProviderEntry("providers.cloud_run", "gcp", "Google Cloud Run jobs"),
    "modal:push": ProviderEntry("providers.modal", "modal", "Modal"),
}

_registered: dict[str, ProviderEntry] = {}
_loaded: dict[str, Provider] = {}


class UnknownPoolType(ValueError):
    def __init__(self, pool_type: str):
        choices = ", ".join(sorted(available_types()))
        super().__init__(f"unknown pool type {pool_type!r}; choose one of: {choices}")
        self.pool_type = pool_type


class ProviderUnavailable(RuntimeError):
    """The adapter exists but its SDK is not installed."""


def register_provider(pool_type: str, module: str, extra: str | None = None,
                      description: str = "") -> None:
    """Add (or replace) a pool type, e.g. a no-op provider for benchmarks and tests."""
    _registered[pool_type] = ProviderEntry(module, extra, description or module)
    _loaded.pop(pool_type, None)


def available_types() -> dict[str, ProviderEntry]:
    return {**KNOWN_PROVIDERS, **_registered}


def is_known(pool_type: str) -> bool:
    return pool_type in available_types()


def get_provider(pool_type: str) -> Provider:
    """The adapter for a pool type, importing its module (and SDK) the first time."""
    if pool_type in _loaded:
        return _loaded[pool_type]
    entry = available_types().get(pool_type)
    if entry is None:
        raise UnknownPoolType(pool_type)
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        if (exc.name or "").startswith("providers"):
            raise
        hint = f"pip install 'pushpool[{entry.extra}]'" if entry.extra else "reinstall pushpool"
        raise ProviderUnavailable(
            f"pool type {pool_type!r} needs a package that is not installed "
            f"({exc.name}); install it with: {hint}"
        ) from exc
    provider: Provider = module.PROVIDER
    _loaded[pool_type] = provider
    return provider


async def close_all() -> None:
    for provider in list(_loaded.values()):
        await provider.close()
