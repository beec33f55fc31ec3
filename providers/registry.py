"""Pool type -> adapter module, imported on first use (fsspec's registry, in small).

A pool type maps to a dotted import path, the pip extra that brings its SDK and the SDK's
modules. Nothing is imported until a pool of that type is used, so ``pushpool --help`` and a
cold start never pay for four cloud SDKs. Adapters import their SDK only inside the calls
that need it, so the first use looks for the SDK's modules (without importing them): a
missing one is ``ProviderUnavailable`` naming the extra to install, at once, instead of an
ImportError deep inside a submit.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from providers.base import Provider


@dataclass(frozen=True)
class ProviderEntry:
    module: str
    extra: str | None  # the ``pip install pushpool[extra]`` that brings its SDK
    description: str
    sdk: tuple[str, ...] = ()  # the modules the extra installs and the adapter imports


KNOWN_PROVIDERS: dict[str, ProviderEntry] = {
    "process": ProviderEntry("providers.process", None, "Local child process (embedded default)"),
    "ecs:push": ProviderEntry("providers.ecs", "aws", "AWS ECS Fargate", ("boto3",)),
    "azure-container-instance:push": ProviderEntry(
        "providers.aci", "azure", "Azure Container Instances",
        ("azure.core", "azure.identity", "azure.mgmt.containerinstance", "azure.mgmt.resource",
         "azure.mgmt.msi", "azure.mgmt.containerregistry", "azure.mgmt.authorization")),
    "cloud-run:push": ProviderEntry(
        "providers.cloud_run", "gcp", "Google Cloud Run jobs",
        ("google.api_core", "google.auth", "google.cloud.run_v2", "google.cloud.logging",
         "jwt")),
    "modal:push": ProviderEntry("providers.modal", "modal", "Modal", ("modal",)),
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


def missing_sdk_module(entry: ProviderEntry) -> str | None:
    """The first of the entry's SDK modules that is not installed, or None."""
    for name in entry.sdk:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ImportError:  # a parent package is missing (``google`` for google.auth)
            return name
    return None


def _unavailable(pool_type: str, entry: ProviderEntry, module: str | None) -> ProviderUnavailable:
    hint = f"pip install 'pushpool[{entry.extra}]'" if entry.extra else "reinstall pushpool"
    return ProviderUnavailable(f"pool type {pool_type!r} needs {module}, which is not "
                               f"installed; install it with: {hint}")


def get_provider(pool_type: str) -> Provider:
    """The adapter for a pool type, importing its module the first time (ProviderUnavailable
    when its SDK is not installed)."""
    if pool_type in _loaded:
        return _loaded[pool_type]
    entry = available_types().get(pool_type)
    if entry is None:
        raise UnknownPoolType(pool_type)
    missing = missing_sdk_module(entry)
    if missing is not None:
        raise _unavailable(pool_type, entry, missing)
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        if (exc.name or "").startswith("providers"):
            raise
        raise _unavailable(pool_type, entry, exc.name) from exc
    provider: Provider = module.PROVIDER
    _loaded[pool_type] = provider
    return provider


async def close_all() -> None:
    for provider in list(_loaded.values()):
        await provider.close()
