"""The Python SDK: ``@flow``, ``my_flow.from_source(...)`` and ``.deploy(...)``.

::

    from dispatcher import flow

    @flow(log_prints=True, retries=2)
    def get_repo_info(repo_name: str = "PrefectHQ/prefect") -> dict:
        ...

    get_repo_info("owner/repo")                      # plain Python, here and now
    get_repo_info.from_source(source="https://github.com/acme/flows.git",
                              entrypoint="repo_info.py:get_repo_info"
                              ).deploy(name="nightly", work_pool_name="local", cron="0 1 * * *")

Calling a flow runs it as plain Python; retries and the timeout apply when its runtime
(``pushpool execute``, dispatcher/runtime.py) runs it for a deployment. ``deploy`` creates
or updates the deployment through the API (PUT /api/deployments at PUSHPOOL_API_URL, with
PUSHPOOL_API_TOKEN) with a parameter schema derived from the function's signature, so a
run with parameters that do not fit is refused when it is created.
"""

from __future__ import annotations

import ast
import builtins
import contextvars
import dataclasses
import functools
import inspect
import logging
import re
import sys
import tempfile
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from dispatcher.errors import validation_messages
from dispatcher.models import NAME_PATTERN, NAME_RULE, Deployment, ScheduleSpec
from dispatcher.sources import GitSource, SourceError, fetch_source, is_git_url, parse_source

P = ParamSpec("P")
R = TypeVar("R")

RUN_LOGGER_NAME = "pushpool.flow"
PRINT_RECORD_FLAG = "pushpool_print"  # set on records made from print() by log_prints


class FlowError(Exception):
    """A flow is defined or deployed wrongly; the message names the argument and the fix."""


class ParameterError(FlowError):
    """Parameters that do not fit the flow's signature; ``field`` is ``parameters.<name>``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def get_run_logger() -> logging.Logger:
    """The run's logger: what it logs (INFO and up) becomes the run's logs at run time."""
    return logging.getLogger(RUN_LOGGER_NAME)


# ---------------------------------------------------------------------------- the flow


@dataclasses.dataclass(eq=False, repr=False)
class Flow(Generic[P, R]):
    """A function with a name and run settings, deployable as is or from a source."""

    fn: Callable[P, R]
    name: str
    description: str | None = None
    log_prints: bool = False
    retries: int = 0
    retry_delay_seconds: float = 0.0
    timeout_seconds: float | None = None
    source: str | None = None  # set by from_source: a git URL or a directory
    entrypoint: str | None = None  # set by from_source: "path/to/file.py:function"

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise FlowError(f"flow name {self.name!r} is not valid: {NAME_RULE}; "
                            "pass @flow(name=...)")
        if self.retries < 0:
            raise FlowError(f"retries must be 0 or more, not {self.retries}")
        if self.retry_delay_seconds < 0:
            raise FlowError(f"retry_delay_seconds must be 0 or more, "
                            f"not {self.retry_delay_seconds}")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise FlowError(f"timeout_seconds must be positive (or None for no timeout), "
                            f"not {self.timeout_seconds}")
        parameters_model(self.fn)  # unsupported signatures fail at decoration time
        functools.update_wrapper(self, self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow here, as plain Python (with log_prints, print also logs)."""
        if self.is_async:
            return cast(R, self._call_async(*args, **kwargs))
        with printing_to_run_logger(self.log_prints):
            return self.fn(*args, **kwargs)

    async def _call_async(self, *args: Any, **kwargs: Any) -> Any:
        with printing_to_run_logger(self.log_prints):
            return await cast(Any, self.fn)(*args, **kwargs)

    def __repr__(self) -> str:
        where = f", entrypoint={self.entrypoint!r}" if self.entrypoint else ""
        return f"Flow(name={self.name!r}{where})"

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def parameter_schema(self) -> dict[str, Any]:
        return parameter_schema(self.fn)

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return validate_parameters(self.fn, parameters)

    def from_source(self, source: str | Path | GitSource, entrypoint: str) -> Flow[P, R]:
        """This flow, deployed from ``source`` (a git URL, a GitSource or a directory)
        where ``entrypoint`` ("path/to/file.py:function", relative to it) defines it."""
        _check_entrypoint(entrypoint)
        text = source_text(source)
        if not is_git_url(text):
            _check_local_entrypoint(Path(text), entrypoint)
        return dataclasses.replace(self, source=text, entrypoint=entrypoint)

    def deploy(self, name: str, work_pool_name: str, work_queue_name: str | None = None, *,
               cron: str | None = None, interval: float | timedelta | None = None,
               rrule: str | None = None, timezone: str | None = None,
               schedules: Sequence[ScheduleSpec | dict[str, Any]] | None = None,
               parameters: dict[str, Any] | None = None,
               job_variables: dict[str, Any] | None = None, image: str | None = None,
               tags: Sequence[str] | None = None, description: str | None = None,
               version: str | None = None, concurrency_limit: int | None = None,
               paused: bool = False, catchup: str | None = None,
               overlap: str | None = None, submit_deadline_seconds: float | None = None,
               print_next_steps: bool = True) -> Deployment:
        """Create or update the deployment ``<flow name>/<name>`` through the API.

        Without from_source the code is deployed from the file that defines the flow (its
        directory, for pools on this machine). Running the same deploy again updates it.
        """
        target = self if self.entrypoint else self._from_defining_file()
        body: dict[str, Any] = {
            "name": name, "flow_name": target.name, "pool_name": work_pool_name,
            "queue_name": work_queue_name, "entrypoint": target.entrypoint,
            "source": target.source, "image": image, "parameters": parameters or {},
            "parameter_schema": parameter_schema(target.fn),
            "job_variables": job_variables or {},
            "schedules": build_schedules(cron, interval, rrule, timezone, schedules),
            "tags": list(tags or []), "description": description or target.description,
            "version": version, "concurrency_limit": concurrency_limit, "paused": paused,
        }
        # Missed-run policy and submit deadline: the server's defaults unless given.
        body.update({k: v for k, v in {"catchup": catchup, "overlap": overlap,
                                       "submit_deadline_seconds": submit_deadline_seconds
                                       }.items() if v is not None})
        _check_body(body)
        if parameters:
            _check_default_parameters(target.fn, parameters)
        deployment, created = _apply(body)
        if print_next_steps:
            print_deploy_summary(deployment, created)
        return deployment

    def _from_defining_file(self) -> Flow[P, R]:
        fn = inspect.unwrap(self.fn)
        if "<locals>" in fn.__qualname__:
            raise FlowError(f"flow {self.name!r} is defined inside a function; define it at "
                            "the top level of a file to deploy it")
        try:
            path = Path(inspect.getfile(fn)).resolve()
        except TypeError:
            path = None
        if path is None or not path.is_file():
            raise FlowError(f"flow {self.name!r} has no source file (defined interactively?); "
                            "use .from_source(source=..., entrypoint=...) to deploy it")
        return self.from_source(path.parent, f"{path.name}:{fn.__name__}")


class FlowDecorator:
    """``flow``: the decorator (``@flow``, ``@flow(name=..., retries=...)``) and
    ``flow.from_source(source, entrypoint)`` for code that is not on this machine."""

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Flow[P, R]: ...

    @overload
    def __call__(self, /, *, name: str | None = None, description: str | None = None,
                 log_prints: bool = False, retries: int = 0, retry_delay_seconds: float = 0.0,
                 timeout_seconds: float | None = None
                 ) -> Callable[[Callable[P, R]], Flow[P, R]]: ...

    def __call__(self, fn: Callable[P, R] | None = None, /, *, name: str | None = None,
                 description: str | None = None, log_prints: bool = False, retries: int = 0,
                 retry_delay_seconds: float = 0.0, timeout_seconds: float | None = None
                 ) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
        """Make a function a flow: ``@flow`` or ``@flow(name=..., retries=..., ...)``."""

        def make(function: Callable[P, R]) -> Flow[P, R]:
            if isinstance(function, Flow):
                raise FlowError(f"{function.name!r} is already a flow; apply @flow once")
            if not callable(function):
                raise FlowError(f"@flow needs a function, not {type(function).__name__}")
            return Flow(fn=function, name=name or default_flow_name(function),
                        description=description or inspect.getdoc(function),
                        log_prints=log_prints, retries=retries,
                        retry_delay_seconds=retry_delay_seconds,
                        timeout_seconds=timeout_seconds)

        return make(fn) if fn is not None else make

    @staticmethod
    def from_source(source: str | Path | GitSource, entrypoint: str) -> Flow[..., Any]:
        """The flow that ``entrypoint`` ("path/to/file.py:function") defines in ``source``
        (a git URL, a GitSource or a directory), ready to ``.deploy()``.

        The source is fetched into a temporary directory (a directory is used as it is)
        and the entrypoint imported from it, as the runtime will, so its settings and
        parameter schema are the code's own; its imports must be installed here too.
        """
        from dispatcher.entrypoints import import_flow, import_path_restored

        _check_entrypoint(entrypoint)
        text = source_text(source)
        with tempfile.TemporaryDirectory(prefix="pushpool-source-") as tmp:
            try:
                directory = fetch_source(text, Path(tmp))
            except SourceError as exc:
                raise FlowError(f"source: {exc}") from None
            _check_local_entrypoint(directory, entrypoint)
            with import_path_restored():
                try:
                    loaded = import_flow(directory, entrypoint, private_name=True)
                except FlowError:
                    raise
                except Exception as exc:  # the entrypoint's own import failed
                    raise FlowError(f"entrypoint: importing {entrypoint} from the source "
                                    f"failed: {type(exc).__name__}: {exc}") from exc
        return dataclasses.replace(loaded, source=text, entrypoint=entrypoint)


flow = FlowDecorator()


def default_flow_name(function: Callable[..., Any]) -> str:
    """``get_repo_info`` -> ``get-repo-info`` (``<lambda>`` -> ``lambda``)."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "", getattr(function, "__name__", "")).strip("_.-")
    return name.replace("_", "-") or "flow"


# ---------------------------------------------------------------------------- parameters


def _annotation_for_schema(annotation: Any) -> Any:
    """The annotation when pydantic can describe it in JSON Schema, else Any."""
    try:
        TypeAdapter(annotation).json_schema()
    except Exception:  # arbitrary classes, forward references that do not resolve
        return Any
    return annotation


@functools.lru_cache(maxsize=256)
def parameters_model(fn: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model of ``fn``'s parameters (fields named by position, aliased by name,
    so any parameter name works, even ones BaseModel uses)."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: describe those as Any
        hints = {}
    fields: dict[str, Any] = {}
    extra: typing.Literal["forbid", "allow"] = "forbid"
    for index, parameter in enumerate(signature.parameters.values()):
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = "allow"
            continue
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY,
                              inspect.Parameter.VAR_POSITIONAL):
            raise FlowError(f"flow parameter {parameter.name!r} of {fn.__name__} is "
                            "positional-only or *args; flows take named parameters only")
        annotation = _annotation_for_schema(hints.get(parameter.name, Any))
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[f"p{index}"] = (annotation, Field(default, alias=parameter.name))
    config = ConfigDict(extra=extra, arbitrary_types_allowed=True, populate_by_name=False)
    return create_model(f"{fn.__name__}_parameters", __config__=config, **fields)


def parameter_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON Schema of ``fn``'s parameters, as stored on a deployment."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # defaults that JSON cannot hold are left out
        schema = parameters_model(fn).model_json_schema(by_alias=True)
    schema["title"] = "Parameters"
    return schema


def validate_parameters(fn: Callable[..., Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments to call ``fn`` with; ParameterError names the parameter."""
    model = parameters_model(fn)
    try:
        values = model.model_validate(parameters)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        path = ".".join(str(part) for part in first["loc"])
        raise ParameterError(f"parameters.{path}" if path else "parameters",
                             first["msg"]) from None
    kwargs = {model.model_fields[name].alias or name: getattr(values, name)
              for name in values.model_fields_set}
    kwargs.update(values.model_extra or {})
    return kwargs


# ---------------------------------------------------------------------------- log_prints

# The logger that print() also writes to while a log_prints flow runs (in this context).
_print_logger: contextvars.ContextVar[logging.Logger | None] = contextvars.ContextVar(
    "pushpool_print_logger", default=None)
_original_print = builtins.print


def _print_and_log(*args: Any, sep: str | None = " ", end: str | None = "\n",
                   file: Any = None, flush: bool = False) -> None:
    _original_print(*args, sep=sep, end=end, file=file, flush=flush)
    logger = _print_logger.get()
    if logger is not None and (file is None or file in (sys.stdout, sys.stderr)):
        text = (" " if sep is None else sep).join(str(arg) for arg in args)
        logger.info(text, extra={PRINT_RECORD_FLAG: True})


@contextmanager
def printing_to_run_logger(enabled: bool) -> Iterator[None]:
    """While active (and enabled), print() also sends its text to the run's logger."""
    if not enabled:
        yield
        return
    if builtins.print is not _print_and_log:
        # Installed once and left in place: it only logs inside this context.
        builtins.print = _print_and_log
    token = _print_logger.set(get_run_logger())
    try:
        yield
    finally:
        _print_logger.reset(token)


# ---------------------------------------------------------------------------- deploying


def source_text(source: str | Path | GitSource) -> str:
    """A deployment's source as stored: the git URL with its settings, or the absolute
    path of an existing directory."""
    if isinstance(source, GitSource):
        return source.to_string()
    if isinstance(source, str) and is_git_url(source):
        try:
            parse_source(source)  # checks its #settings
        except SourceError as exc:
            raise FlowError(f"source: {exc}") from None
        return source
    directory = Path(source).expanduser().resolve()
    if not directory.is_dir():
        raise FlowError(f"source: {directory} is not a directory; give a git URL or "
                        "the directory holding the flow's code")
    return str(directory)


def _check_entrypoint(entrypoint: str) -> None:
    path, sep, function = entrypoint.rpartition(":")
    if not sep or not path or not function.isidentifier():
        raise FlowError(f"entrypoint {entrypoint!r} must look like 'path/to/file.py:function'")


def _check_local_entrypoint(directory: Path, entrypoint: str) -> None:
    """The file exists under the source and defines the function (read, not imported)."""
    path, _, function = entrypoint.rpartition(":")
    file = directory / path
    if not path.endswith(".py"):
        return  # a module path ("pkg.module:function") resolved at run time
    if not file.is_file():
        raise FlowError(f"entrypoint: {file} does not exist; the entrypoint's path is "
                        f"relative to the source {directory}")
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise FlowError(f"entrypoint: {file} cannot be read as Python: {exc}") from None
    defined = {node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assigned = {target.id for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}
    if function not in defined | assigned:
        raise FlowError(f"entrypoint: {file} defines no function {function!r} at its top level")


def _check_default_parameters(fn: Callable[..., Any], parameters: dict[str, Any]) -> None:
    """The deployment's parameters fit the signature (required ones may come with runs)."""
    model = parameters_model(fn)
    try:
        model.model_validate(parameters)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            if error["type"] == "missing":
                continue
            path = ".".join(str(part) for part in error["loc"])
            raise FlowError(f"parameters.{path}: {error['msg']}") from None


def build_schedules(cron: str | None, interval: float | timedelta | None, rrule: str | None,
                    timezone: str | None,
                    schedules: Sequence[ScheduleSpec | dict[str, Any]] | None
                    ) -> list[dict[str, Any]]:
    """deploy()'s schedule arguments as the API's schedule objects (at most one kind).

    Nothing given is dropped: ``interval=0``, or a time zone with no schedule, becomes the
    schedule object that pushpool.yaml would hold, so the same check refuses it."""
    given = [name for name, value in (("cron", cron), ("interval", interval), ("rrule", rrule),
                                      ("schedules", schedules)) if value is not None]
    if len(given) > 1:
        raise FlowError(f"give one of cron, interval, rrule or schedules, not {given}")
    if schedules is not None:
        if timezone is not None:
            raise FlowError("timezone goes with cron, interval or rrule; with schedules, "
                            "give each schedule its own timezone")
        return [item.model_dump(mode="json", exclude_none=True)
                if isinstance(item, ScheduleSpec) else dict(item) for item in schedules]
    spec: dict[str, Any] = {} if timezone is None else {"timezone": timezone}
    if cron is not None:
        spec["cron"] = cron
    elif interval is not None:
        spec["interval"] = (interval.total_seconds() if isinstance(interval, timedelta)
                            else interval)
    elif rrule is not None:
        spec["rrule"] = rrule
    return [spec] if spec else []


def _check_body(body: dict[str, Any]) -> None:
    """Refuse what the API would, with its words: the input model, then each schedule."""
    from dispatcher import schedules as schedule_math
    from dispatcher.models import DeploymentApply

    try:
        data = DeploymentApply.model_validate(body)
    except ValidationError as exc:
        field, message = validation_messages(exc)[0]
        raise FlowError(f"{field or 'deployment'}: {message}") from None
    for index, spec in enumerate(data.schedules):
        try:
            schedule_math.validate_schedule(spec, field=f"schedules[{index}]")
        except schedule_math.ScheduleError as exc:
            raise FlowError(str(exc)) from None  # the API's own words for it


def _apply(body: dict[str, Any]) -> tuple[Deployment, bool]:
    from dispatcher.client import ApiError, ApiTransportError, ApiUnreachable, client_from_env

    try:
        with client_from_env() as client:
            answer = client.put("/deployments", json=body)
    except ApiError as exc:
        raise FlowError(f"the API refused the deployment: {exc.message}") from None
    except ApiUnreachable as exc:
        raise FlowError(f"cannot reach the pushpool API at {exc.url}; start it with "
                        "`pushpool server start` or set PUSHPOOL_API_URL") from None
    except ApiTransportError as exc:
        raise FlowError(f"the pushpool API at {exc.url} did not answer properly "
                        f"({exc.reason}); try again") from None
    return Deployment.model_validate(answer["deployment"]), bool(answer.get("created"))


def print_deploy_summary(deployment: Deployment, created: bool) -> None:
    """The confirmation ``pushpool deploy`` prints, for one deployment."""
    from dispatcher.terminal import print_deploy_summary

    verb = "created" if created else "updated"
    print_deploy_summary([[deployment.full_name, "applied",
                           f"{verb} in work pool {deployment.pool_name!r}"]],
                         [deployment.full_name], all_ok=True)
