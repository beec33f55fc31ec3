"""``pushpool serverless package``: a cloud function's artefact, built from this install.

Nothing is downloaded: pushpool's own packages and every distribution it needs for the
chosen cloud (its requirements, with that cloud's extras) are copied from the Python
environment pushpool runs in, so the artefact holds exactly the versions tested here.
Compiled dependencies (pydantic-core, asyncpg, cryptography) are this machine's builds:
build on Linux with the CPython version and CPU architecture the function runs on.

- aws: ``pushpool-aws-lambda.zip``, the packages at the zip's root; handler
  ``dispatcher.triggers.aws_lambda.handler``.
- gcp: a folder with ``main.py`` (the two functions), the packages beside it, and a
  ``requirements.txt`` naming functions-framework, which the platform wants listed.
- azure: a function app folder in the v2 layout: ``function_app.py``, ``host.json``,
  ``requirements.txt`` and the packages under ``.python_packages/lib/site-packages``,
  where a "no build" deployment looks for them.
"""

from __future__ import annotations

import re
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CLOUDS = ("aws", "gcp", "azure")
EXTRAS = {"aws": ("aws",), "gcp": ("gcp", "serverless"), "azure": ("azure", "serverless")}
OWN_PACKAGES = ("dispatcher", "providers")
MARKER = ".pushpool-package"  # in a folder this command made, so a rebuild may replace it

GCP_MAIN = '''"""Google Cloud Functions entry points (made by `pushpool serverless package`)."""

from dispatcher.triggers.gcp import cloud_event_function, http_function

__all__ = ["cloud_event_function", "http_function"]
'''
AZURE_APP = '''"""The Azure function app (made by `pushpool serverless package`)."""

from dispatcher.triggers.azure import app

__all__ = ["app"]
'''
AZURE_HOST_JSON = '''{
  "version": "2.0",
  "functionTimeout": "00:01:00",
  "extensions": {"http": {"routePrefix": ""}},
  "extensionBundle": {
    "id": "Microsoft.Azure.Functions.ExtensionBundle",
    "version": "[4.*, 5.0.0)"
  }
}
'''


class PackageError(Exception):
    """A piece the artefact needs is not installed, or the output cannot be written."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Piece:
    """One distribution to copy: its name and the files under site-packages."""

    name: str
    root: Path
    files: list[Path]  # relative to root


def _requirement_name(requirement: str) -> tuple[str, str]:
    """(name, marker) of a requirement line such as ``boto3>=1.34; extra == "aws"``."""
    spec, _, marker = requirement.partition(";")
    name = re.split(r"[\s\[<>=!~(]", spec.strip(), maxsplit=1)[0]
    return name, marker.strip()


def _marker_applies(marker: str, extras: tuple[str, ...]) -> bool:
    if not marker:
        return True
    from packaging.markers import Marker

    parsed = Marker(marker)
    return any(parsed.evaluate({"extra": extra}) for extra in extras or ("",))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed_distributions(cloud: str) -> list[str]:
    """pushpool's requirements for ``cloud``, and theirs, by installed name."""
    extras = EXTRAS[cloud]
    wanted: dict[str, None] = {}
    stack: list[tuple[str, tuple[str, ...]]] = [("pushpool", extras)]
    while stack:
        name, with_extras = stack.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise PackageError(
                f"{name!r} is not installed here, and the {cloud} package needs it",
                f"install it with: pip install 'pushpool[{','.join(extras)}]'") from None
        key = _normal(dist.metadata["Name"])
        if key in wanted:
            continue
        wanted[key] = None
        for requirement in dist.requires or []:
            dep, marker = _requirement_name(requirement)
            if _marker_applies(marker, with_extras):
                stack.append((dep, ()))
    return list(wanted)


def _pieces(names: list[str]) -> Iterator[Piece]:
    for name in names:
        dist = metadata.distribution(name)
        if _normal(name) == "pushpool":
            yield _own_piece()
            continue
        root = Path(str(dist.locate_file("")))
        files = [Path(str(f)) for f in dist.files or []
                 if not str(f).startswith("..") and "__pycache__" not in str(f)]
        yield Piece(name, root, files)


def _own_piece() -> Piece:
    """pushpool's own packages, from their source (an editable install has no copies)."""
    import dispatcher

    root = Path(dispatcher.__file__).resolve().parent.parent
    files = [path.relative_to(root) for package in OWN_PACKAGES
             for path in sorted((root / package).rglob("*"))
             if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]
    return Piece("pushpool", root, files)


def _copy(pieces: list[Piece], into: Path, progress: Callable[[str, int], None]) -> int:
    count = 0
    for piece in pieces:
        for relative in piece.files:
            source = piece.root / relative
            if not source.is_file():
                continue
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            count += 1
        progress(piece.name, len(piece.files))
    return count


def _zip(folder: Path, path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.name != MARKER:
                archive.write(file, file.relative_to(folder))


def _pinned(name: str) -> str:
    return f"{name}=={metadata.version(name)}"


def build(cloud: str, output: Path, progress: Callable[[str, int], None]) -> Path:
    """Build the artefact for ``cloud`` under ``output``; answer its path."""
    if cloud not in CLOUDS:
        raise ValueError(f"--cloud: {cloud!r} is not one of {', '.join(CLOUDS)}")
    if not sys.platform.startswith("linux"):
        raise PackageError(f"cloud functions run on Linux, and this is {sys.platform}",
                           "build the package on Linux (a container will do)")
    pieces = list(_pieces(needed_distributions(cloud)))
    output.mkdir(parents=True, exist_ok=True)
    if cloud == "aws":
        staging = output / "pushpool-aws-lambda"
        _fresh(staging)
        _copy(pieces, staging, progress)
        artefact = output / "pushpool-aws-lambda.zip"
        _zip(staging, artefact)
        shutil.rmtree(staging)
        return artefact
    folder = output / f"pushpool-{cloud}-functions"
    _fresh(folder)
    if cloud == "gcp":
        _copy(pieces, folder, progress)
        (folder / "main.py").write_text(GCP_MAIN)
        (folder / "requirements.txt").write_text(_pinned("functions-framework") + "\n")
    else:
        _copy(pieces, folder / ".python_packages" / "lib" / "site-packages", progress)
        (folder / "function_app.py").write_text(AZURE_APP)
        (folder / "host.json").write_text(AZURE_HOST_JSON)
        (folder / "requirements.txt").write_text(_pinned("azure-functions") + "\n")
    return folder


def _fresh(folder: Path) -> None:
    """An empty folder, refusing to empty one that pushpool did not make."""
    if folder.exists():
        marker = folder / MARKER
        if not marker.exists() and any(folder.iterdir()):
            raise PackageError(f"{folder} exists and was not made by this command",
                               "choose another --output, or remove it yourself")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by pushpool serverless package\n")
