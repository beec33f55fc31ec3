"""A machine where `pip install pushpool` ran without some extras, in a process of its own.

``hide_extras(["aws"])``, called first thing in a fresh process, makes the packages those
extras install unfindable: the path finder on ``sys.meta_path`` is replaced by one that
answers "not here" for them and their submodules, so ``import boto3`` raises
ModuleNotFoundError and ``importlib.util.find_spec("boto3")`` answers None, as they do when
the package is not installed. Nothing else changes. Only for child processes: in the test
process an SDK may already be imported. ``python_code(extras, code)`` is the ``python -c``
program that does it and then runs ``code``.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# What each extra of pyproject.toml installs, as import names (its SDKs and what only they
# bring in).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "aws": ("boto3", "botocore", "s3transfer"),
    "gcp": ("google.cloud.run_v2", "google.cloud.logging", "google.cloud.logging_v2",
            "google.api_core", "google.auth", "google.oauth2", "jwt"),
    "azure": ("azure",),
    "modal": ("modal", "modal_proto", "synchronicity"),
}


def _hidden(name: str, hidden: tuple[str, ...]) -> bool:
    return any(name == module or name.startswith(module + ".") for module in hidden)


def hide_extras(extras: Iterable[str]) -> None:
    hidden = tuple(module for extra in extras for module in EXTRA_MODULES[extra])

    class PathFinderWithout(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, fullname: str, path: Any = None, target: Any = None) -> Any:
            if _hidden(fullname, hidden):
                return None
            return super().find_spec(fullname, path, target)

    sys.meta_path[:] = [PathFinderWithout if finder is importlib.machinery.PathFinder
                        else finder for finder in sys.meta_path]
    for name in [name for name in sys.modules if _hidden(name, hidden)]:
        del sys.modules[name]  # brought in at start-up by a .pth file


def python_code(extras: Iterable[str], code: str) -> str:
    return (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"from tests.fakes.missing_sdks import hide_extras; hide_extras({list(extras)!r})\n"
            f"{code}")
