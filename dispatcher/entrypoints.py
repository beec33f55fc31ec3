"""Importing a flow from its code: ``"path/to/file.py:function"`` or ``"pkg.module:function"``
inside a source directory.

The runtime does it to run a deployment's flow; ``flow.from_source(...)`` does it on the
deploying machine, from a fetched copy of the source, to read the flow's settings and
parameter schema. A plain function becomes a flow with default settings.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from dispatcher.flows import Flow, FlowError, flow


def import_flow(source_dir: Path, entrypoint: str, *, private_name: bool = False
                ) -> Flow[..., Any]:
    """The flow ``entrypoint`` names, imported from ``source_dir``.

    A file is imported under its own name unless a module of that name is loaded already,
    so the flow's own imports of it still work; ``private_name`` always takes a name of
    ours instead, so that a program deploying the flow keeps its own modules."""
    path, sep, name = entrypoint.rpartition(":")
    if not sep or not path or not name:
        raise FlowError(f"entrypoint {entrypoint!r} must look like 'path/to/file.py:function'")
    if path.endswith(".py"):
        module = _import_file(source_dir, path, private_name)
    else:
        if str(source_dir) not in sys.path:
            sys.path.insert(0, str(source_dir))
        module = importlib.import_module(path)
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise FlowError(f"entrypoint {entrypoint!r}: {path} has no {name!r}") from None
    if isinstance(obj, Flow):
        return obj
    if callable(obj):
        return flow(obj)
    raise FlowError(f"entrypoint {entrypoint!r}: {name!r} is a {type(obj).__name__}, "
                    "not a function")


def _import_file(source_dir: Path, relative: str, private_name: bool) -> ModuleType:
    file = (source_dir / relative).resolve()
    if not file.is_file():
        raise FlowError(f"entrypoint file {relative} is not in the source ({source_dir})")
    for directory in (str(source_dir), str(file.parent)):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    taken = private_name or file.stem in sys.modules
    module_name = f"pushpool_flow_{file.stem}" if taken else file.stem
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise FlowError(f"entrypoint file {relative} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def import_path_restored() -> Iterator[None]:
    """``sys.path`` as it was once the block ends: an import from a temporary copy of a
    source must not leave its directory on the path of the deploying program."""
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved
