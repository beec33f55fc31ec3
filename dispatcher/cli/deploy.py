"""``pushpool.yaml``: read it, check it, and map each entry to a ``DeploymentApply`` body.

The file is the CLI's declarative form of ``flow.deploy()``::

    deployments:
      - name: my-deployment
        entrypoint: flows/hello.py:hello      # or flow_name + command
        work_pool: {name: local, work_queue_name: default, job_variables: {}}
        schedules: [{cron: "*/5 * * * *", timezone: Europe/Paris}]
        catchup: latest            # missed slots: all | latest | none
        overlap: skip              # a previous run still active: allow | skip | cancel-previous
        submit_deadline_seconds: 600   # not handed to the provider by then: a dead letter

Every problem is reported as one ``CliError`` line ``FILE:LINE: what is wrong; how to fix``.
The YAML node tree (with line marks) is kept next to the loaded values so that both our own
checks and the pydantic model's errors point at the line the user has to edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher.cli.output import CliError

if TYPE_CHECKING:
    import yaml

TOP_LEVEL_KEYS = ("deployments", "definitions")  # definitions: a place for YAML anchors
DEPLOYMENT_KEYS = ("name", "flow_name", "command", "entrypoint", "source", "image",
                   "work_pool", "parameters", "parameter_schema", "schedules", "tags",
                   "description", "version", "concurrency_limit", "paused",
                   "submit_deadline_seconds", "catchup", "overlap")
WORK_POOL_KEYS = ("name", "work_queue_name", "job_variables")
SCHEDULE_KEYS = ("cron", "interval", "anchor_date", "rrule", "timezone", "active")
# Where a DeploymentApply field comes from in the file, when the names differ.
APPLY_FIELD_TO_YAML: dict[str, tuple[str, ...]] = {
    "pool_name": ("work_pool", "name"),
    "queue_name": ("work_pool", "work_queue_name"),
    "job_variables": ("work_pool", "job_variables"),
}


@dataclass(frozen=True)
class PlannedDeployment:
    """One entry of pushpool.yaml, ready to PUT to /api/deployments."""

    name: str
    flow_name: str
    body: dict[str, Any]
    line: int

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def load_deployments(path: Path) -> list[PlannedDeployment]:
    """Read and check ``path``; raise ``CliError`` (exit 2) naming the file, line and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path} not found",
                       "create a pushpool.yaml or pass --file PATH") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    return parse_deployments(text, str(path))


def parse_deployments(text: str, filename: str = "pushpool.yaml") -> list[PlannedDeployment]:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "syntax error"
        raise CliError(f"{filename}:{line}: invalid YAML: {problem}",
                       "check the indentation and quoting on that line") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{filename}: invalid YAML: {exc}") from None

    where = _Locator(filename)
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        raise CliError(f"{filename}:1: expected a mapping with a 'deployments' list",
                       "start the file with `deployments:`")
    where.check_keys(root, TOP_LEVEL_KEYS, "the top level")
    entries = data.get("deployments")
    entries_node = where.value_node(root, "deployments")
    if not isinstance(entries, list) or not isinstance(entries_node, yaml.SequenceNode):
        line = where.key_line(root, "deployments") or 1
        raise CliError(f"{filename}:{line}: 'deployments' must be a list of deployments",
                       "write `deployments:` then one `- name: ...` entry per deployment")
    if not entries:
        raise CliError(f"{filename}:{where.key_line(root, 'deployments')}: "
                       "'deployments' is empty", "add at least one `- name: ...` entry")

    planned = [_plan(where, node, entry, index)
               for index, (node, entry) in enumerate(zip(entries_node.value, entries,
                                                         strict=True))]
    seen: dict[str, int] = {}
    for item in planned:
        if item.full_name in seen:
            raise CliError(f"{filename}:{item.line}: deployment {item.full_name!r} is defined "
                           f"twice (first on line {seen[item.full_name]})",
                           "give each deployment its own name")
        seen[item.full_name] = item.line
    return planned


def flow_name_from_entrypoint(entrypoint: str) -> str | None:
    """``flows/hello.py:hello`` -> ``hello``; None when there is no ``:function`` part."""
    _, sep, function = entrypoint.rpartition(":")
    if not sep:
        return None
    return function.strip() or None


def _plan(where: _Locator, node: yaml.Node, entry: Any, index: int) -> PlannedDeployment:
    import yaml

    line = node.start_mark.line + 1
    label = f"deployments[{index}]"
    if not isinstance(node, yaml.MappingNode) or not isinstance(entry, dict):
        raise where.error(line, f"{label} must be a mapping with name, work_pool, ...")
    name = entry.get("name")
    if isinstance(name, str) and name:
        label = f"deployment {name!r}"
    where.check_keys(node, DEPLOYMENT_KEYS, label)

    body: dict[str, Any] = {key: _jsonable(value) for key, value in entry.items()
                            if key not in ("work_pool",) and value is not None}

    if body.get("flow_name") is None:
        entrypoint = entry.get("entrypoint")
        if isinstance(entrypoint, str) and entrypoint:
            derived = flow_name_from_entrypoint(entrypoint)
            if derived is None:
                raise where.error(where.key_line(node, "entrypoint") or line,
                                  f"{label}: entrypoint {entrypoint!r} has no function",
                                  "write it as PATH:FUNCTION, e.g. flows/hello.py:hello")
            body["flow_name"] = derived
        else:
            raise where.error(line, f"{label} needs flow_name or entrypoint",
                              "add `flow_name: NAME` or `entrypoint: flows/x.py:function`")

    pool_node = where.value_node(node, "work_pool")
    pool = entry.get("work_pool")
    if pool is None:
        raise where.error(line, f"{label} needs work_pool",
                          "add `work_pool: {name: POOL}` (see `pushpool work-pool ls`)")
    if isinstance(pool, str):
        body["pool_name"] = pool
    elif isinstance(pool, dict) and isinstance(pool_node, yaml.MappingNode):
        where.check_keys(pool_node, WORK_POOL_KEYS, f"{label} work_pool")
        if pool.get("name") is None:
            raise where.error(pool_node.start_mark.line + 1, f"{label}: work_pool needs a name",
                              "add `name: POOL` under work_pool")
        body["pool_name"] = pool["name"]
        if pool.get("work_queue_name") is not None:
            body["queue_name"] = pool["work_queue_name"]
        if pool.get("job_variables") is not None:
            body["job_variables"] = _jsonable(pool["job_variables"])
    else:
        raise where.error(where.key_line(node, "work_pool") or line,
                          f"{label}: work_pool must be a mapping with name, work_queue_name "
                          "and job_variables")

    schedules_node = where.value_node(node, "schedules")
    if isinstance(schedules_node, yaml.SequenceNode):
        for schedule_node in schedules_node.value:
            if isinstance(schedule_node, yaml.MappingNode):
                where.check_keys(schedule_node, SCHEDULE_KEYS, f"{label} schedule")

    _validate(where, node, body, label)
    return PlannedDeployment(name=str(body.get("name")), flow_name=str(body["flow_name"]),
                             body=body, line=line)


def _validate(where: _Locator, node: yaml.Node, body: dict[str, Any], label: str) -> None:
    """Check the body against the API's own input model, so errors point at a line."""
    from pydantic import ValidationError

    from dispatcher.models import DeploymentApply

    try:
        DeploymentApply.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        yaml_loc = APPLY_FIELD_TO_YAML.get(str(loc[0]), (str(loc[0]),)) + loc[1:] if loc else ()
        dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in yaml_loc)
        dotted = dotted.replace(".[", "[")
        message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
        line = where.line_of(node, yaml_loc)
        raise where.error(line, f"{label}: {dotted or 'entry'}: {message}") from None


def _jsonable(value: Any) -> Any:
    """YAML timestamps become RFC 3339 strings; everything else is already JSON-shaped."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class _Locator:
    """Finds lines in the composed YAML node tree and words errors ``FILE:LINE: ...``."""

    filename: str

    def error(self, line: int, message: str, hint: str | None = None) -> CliError:
        return CliError(f"{self.filename}:{line}: {message}", hint)

    def _pairs(self, node: yaml.Node) -> list[tuple[yaml.Node, yaml.Node]]:
        import yaml

        return list(node.value) if isinstance(node, yaml.MappingNode) else []

    def key_line(self, node: yaml.Node, key: str) -> int | None:
        for key_node, _ in self._pairs(node):
            if key_node.value == key:
                return int(key_node.start_mark.line) + 1
        return None

    def value_node(self, node: yaml.Node, key: str) -> yaml.Node | None:
        for key_node, value_node in self._pairs(node):
            if key_node.value == key:
                return value_node
        return None

    def check_keys(self, node: yaml.Node, allowed: tuple[str, ...], where: str) -> None:
        import difflib

        seen: set[str] = set()
        for key_node, _ in self._pairs(node):
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key == "<<":  # YAML merge key
                continue
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = (f"did you mean {close[0]!r}?" if close
                        else "allowed keys: " + ", ".join(allowed))
                raise self.error(line, f"unknown key {key!r} in {where}", hint)
            if key in seen:
                raise self.error(line, f"key {key!r} appears twice in {where}",
                                 "keep one of them")
            seen.add(key)

    def line_of(self, node: yaml.Node, path: tuple[Any, ...]) -> int:
        """The line of the deepest node along ``path`` (mapping keys and list indices)."""
        import yaml

        line = int(node.start_mark.line) + 1
        current: yaml.Node | None = node
        for part in path:
            if isinstance(current, yaml.MappingNode):
                found = None
                for key_node, value_node in current.value:
                    if key_node.value == part:
                        line = int(key_node.start_mark.line) + 1
                        found = value_node
                        break
                current = found
            elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) \
                    and part < len(current.value):
                current = current.value[part]
                line = int(current.start_mark.line) + 1
            else:
                break
            if current is None:
                break
        return line
