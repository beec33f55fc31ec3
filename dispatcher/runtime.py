"""``pushpool execute``: the in-container runtime that runs one flow run and reports it.

The dispatcher starts it as a deployment's job command when the deployment has an
entrypoint. It reads the run from the environment the dispatcher set:

    PUSHPOOL_RUN_ID, PUSHPOOL_RUN_NAME   which run this is
    PUSHPOOL_API_URL, PUSHPOOL_RUN_TOKEN where to report, and the token valid for this run only
    PUSHPOOL_SOURCE                      a git URL or directory (dispatcher/sources.py); unset:
                                         the code is in the working directory (the image)
    PUSHPOOL_ENTRYPOINT                  "path/to/file.py:function" inside the source
    PUSHPOOL_PARAMETERS                  the run's parameters, a JSON object

then fetches the source, imports the entrypoint, validates the parameters against the
function's signature, reports RUNNING, runs the flow (with its retries and its timeout per
attempt) while its output and its run logger's records go to the run's logs in batches,
and reports COMPLETED with the JSON of the return value or FAILED with the error (the
traceback is in the logs). It exits 0 only when the flow completed, so a provider that sees
only the exit code agrees with the reported state. Reports go through
dispatcher/runtime_reporter.py: an unreachable API is retried, never the user's problem.
SIGTERM (a cancel, the dispatcher's timeout) stops the flow; the provider's status then
decides the run's final state, as it does when the runtime dies without a report.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TextIO

from dispatcher import flows as flows_module
from dispatcher.entrypoints import import_flow
from dispatcher.flows import (
    PRINT_RECORD_FLAG,
    RUN_LOGGER_NAME,
    Flow,
    FlowError,
    ParameterError,
    printing_to_run_logger,
)
from dispatcher.runtime_reporter import Reporter, ReporterSettings
from dispatcher.sources import SourceError, fetch_source, parse_source, redact

RUNNING_ANSWER_WAIT_SECONDS = 5.0  # a slow API delays the flow at most this long
HARD_STOP_GRACE_SECONDS = 10.0  # a flow that ignores its timeout is killed this much later
CLOSE_WAIT_SECONDS = 30.0  # leftover lines after the final state
MAX_RESULT_BYTES = 256 * 1024
MAX_STATE_MESSAGE = 4000
EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, EXIT_TERMINATED = 0, 1, 2, 143


class UsageError(Exception):
    """The environment does not describe a run (missing or malformed variable)."""


class FlowTimeout(BaseException):
    """Raised in the flow when its timeout passes (a BaseException: ``except Exception``
    in the user's code must not swallow it)."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM."""


@dataclass(frozen=True)
class RunIdentity:
    run_id: str
    run_name: str
    api_url: str
    token: str | None
    entrypoint: str
    source: str | None
    parameters: dict[str, Any]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RunIdentity:
        missing = [name for name in ("PUSHPOOL_RUN_ID", "PUSHPOOL_API_URL",
                                     "PUSHPOOL_ENTRYPOINT") if not environ.get(name)]
        if missing:
            raise UsageError(f"{', '.join(missing)} not set; `pushpool execute` runs inside a "
                             "run's job, where the dispatcher sets them")
        try:
            parameters = json.loads(environ.get("PUSHPOOL_PARAMETERS") or "{}")
        except json.JSONDecodeError as exc:
            raise UsageError(f"PUSHPOOL_PARAMETERS is not JSON ({exc})") from None
        if not isinstance(parameters, dict):
            raise UsageError("PUSHPOOL_PARAMETERS must be a JSON object")
        run_id = environ["PUSHPOOL_RUN_ID"]
        return cls(run_id=run_id, run_name=environ.get("PUSHPOOL_RUN_NAME") or run_id,
                   api_url=environ["PUSHPOOL_API_URL"],
                   token=environ.get("PUSHPOOL_RUN_TOKEN") or None,
                   entrypoint=environ["PUSHPOOL_ENTRYPOINT"],
                   source=environ.get("PUSHPOOL_SOURCE") or None, parameters=parameters)


@dataclass(frozen=True)
class Outcome:
    state: Literal["COMPLETED", "FAILED", "STOPPED"]
    message: str
    result: Any = None


# ---------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """``pushpool execute``: run the flow run described by the environment."""
    parser = argparse.ArgumentParser(
        prog="pushpool execute", description="Run one flow run inside its job (the "
        "dispatcher sets PUSHPOOL_RUN_ID, PUSHPOOL_API_URL, PUSHPOOL_RUN_TOKEN, "
        "PUSHPOOL_SOURCE, PUSHPOOL_ENTRYPOINT and PUSHPOOL_PARAMETERS). Exits 0 only when "
        "the flow completed.")
    parser.parse_args(argv)
    try:
        identity = RunIdentity.from_env(os.environ)
    except UsageError as exc:
        print(f"pushpool execute: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reporter = Reporter(identity.api_url, identity.run_id, identity.token,
                        ReporterSettings.from_env(os.environ))
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with tempfile.TemporaryDirectory(prefix="pushpool-run-") as tmp, \
                captured_output(reporter), run_logger_to(reporter):
            outcome = execute(identity, reporter, Path(tmp))
    except Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        reporter.log("runtime", "Stopped: the job got SIGTERM (cancelled or past its timeout)")
        reporter.close(timeout=5.0)
        return EXIT_TERMINATED
    finally:
        if signal.getsignal(signal.SIGTERM) is _raise_terminated:
            signal.signal(signal.SIGTERM, previous)
    reporter.close(timeout=CLOSE_WAIT_SECONDS)
    return exit_code_of(outcome)


def exit_code_of(outcome: Outcome) -> int:
    """0 only when the flow completed, so a provider that sees only the exit code agrees."""
    return EXIT_COMPLETED if outcome.state == "COMPLETED" else EXIT_FAILED


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def execute(identity: RunIdentity, reporter: Reporter, workdir: Path) -> Outcome:
    """Fetch, import, validate, run with retries, report; answers how it ended."""
    say = _runtime_logger(reporter)
    try:
        source_dir = _fetch(identity, workdir, say)
    except SourceError as exc:
        return _fail(reporter, say, str(exc))
    except OSError as exc:
        return _fail(reporter, say, f"could not fetch the flow's code: {exc}")
    try:
        target = load_flow(source_dir, identity.entrypoint)
        kwargs = target.validate_parameters(identity.parameters)
    except (FlowError, UsageError) as exc:
        return _fail(reporter, say, str(exc))
    except Exception as exc:  # the entrypoint's own import failed
        reporter_lines(reporter, "stderr", traceback.format_exc())
        return _fail(reporter, say, f"could not import {identity.entrypoint}: "
                                    f"{type(exc).__name__}: {exc}")
    answer = reporter.report_state("RUNNING", f"flow {target.name!r} started",
                                   wait=RUNNING_ANSWER_WAIT_SECONDS)
    if answer.answered and answer.status == 409:
        say(f"Not starting the flow: {answer.message}")
        return Outcome("STOPPED", answer.message)
    outcome = run_attempts(target, kwargs, reporter, say)
    say(f"Finished in state {outcome.state}" +
        (f": {outcome.message}" if outcome.state != "COMPLETED" else ""))
    # The run is final once this is taken, so no later status poll would record how the
    # job exited: the report says it (the exit code main() answers for this outcome).
    final = reporter.report_state(outcome.state, outcome.message[:MAX_STATE_MESSAGE],
                                  outcome.result, exit_code=exit_code_of(outcome))
    if final.answered and final.status != 200:
        say(f"The API did not take the final state: {final.message}")
    return outcome


def _runtime_logger(reporter: Reporter) -> Callable[[str], None]:
    def say(message: str) -> None:
        reporter.log("runtime", message)

    return say


def _fail(reporter: Reporter, say: Callable[[str], None], message: str) -> Outcome:
    say(f"Finished in state FAILED: {message}")
    reporter.report_state("FAILED", message[:MAX_STATE_MESSAGE], exit_code=EXIT_FAILED)
    return Outcome("FAILED", message)


def _fetch(identity: RunIdentity, workdir: Path, say: Callable[[str], None]) -> Path:
    if identity.source is None:
        say(f"Using the code in {Path.cwd()} (the deployment has no source)")
        return Path.cwd()
    source = parse_source(identity.source)  # a malformed source fails before anything runs
    if isinstance(source, Path):
        say(f"Using the flow's code in {source}")
        return fetch_source(identity.source, workdir)
    at = f" at {source.ref}" if source.ref else ""
    say(f"Fetching the flow's code from {redact(source.url)}{at}")
    started = time.monotonic()
    source_dir = fetch_source(identity.source, workdir)
    say(f"Fetched in {time.monotonic() - started:.1f}s")
    return source_dir


# ---------------------------------------------------------------------------- loading


def load_flow(source_dir: Path, entrypoint: str) -> Flow[..., Any]:
    """Import ``entrypoint`` ("file.py:function" or "package.module:function") from the
    source and answer its flow (a plain function becomes a flow with default settings)."""
    os.chdir(source_dir)  # the flow finds files of its repository where it expects them
    return import_flow(source_dir, entrypoint)


# ---------------------------------------------------------------------------- running


def run_attempts(target: Flow[..., Any], kwargs: dict[str, Any], reporter: Reporter,
                 say: Callable[[str], None]) -> Outcome:
    """Run the flow up to 1 + retries times; answers the outcome of the last attempt."""
    attempts = target.retries + 1
    for attempt in range(1, attempts + 1):
        counter = f" (attempt {attempt} of {attempts})" if attempts > 1 else ""
        say(f"Running flow {target.name!r}{counter}")
        try:
            value = call_flow(target, kwargs, reporter)
        except FlowTimeout:
            error = f"timed out after {target.timeout_seconds:g}s"
        except Exception as exc:
            reporter_lines(reporter, "stderr", user_traceback(exc))
            error = f"{type(exc).__name__}: {exc}"
        else:
            result, note = jsonable_result(value)
            if note:
                say(note)
            return Outcome("COMPLETED", "completed", result)
        if attempt < attempts:
            say(f"Attempt {attempt} failed ({error}); retrying in "
                f"{target.retry_delay_seconds:g}s")
            time.sleep(target.retry_delay_seconds)
            continue
        return Outcome("FAILED", f"the flow failed: {error}")
    raise AssertionError("unreachable")


def call_flow(target: Flow[..., Any], kwargs: dict[str, Any], reporter: Reporter) -> Any:
    """One attempt, with the flow's timeout (raises FlowTimeout) and its log_prints."""
    timeout = target.timeout_seconds
    with printing_to_run_logger(target.log_prints), _hard_stop_after(timeout, reporter):
        if target.is_async:
            return asyncio.run(_call_async(target, kwargs, seconds=timeout))
        if not timeout:
            return target.fn(**kwargs)
        return _call_with_alarm(target.fn, kwargs, timeout)


def _call_with_alarm(fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float) -> Any:
    """SIGALRM interrupts the main thread wherever it is, even in time.sleep or a read."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise FlowTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(**kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def _call_async(target: Flow[..., Any], kwargs: dict[str, Any], *,
                      seconds: float | None) -> Any:
    limit = asyncio.timeout(seconds)
    try:
        async with limit:
            return await target.fn(**kwargs)
    except TimeoutError:
        if limit.expired():
            raise FlowTimeout() from None
        raise


@contextmanager
def _hard_stop_after(timeout: float | None, reporter: Reporter) -> Iterator[None]:
    """A flow stuck where no signal reaches it (a C call) is ended for good, reported."""
    if not timeout:
        yield
        return

    def stop() -> None:
        message = (f"the flow failed: timed out after {timeout:g}s and did not stop; "
                   "the runtime ended it")
        reporter.log("runtime", f"Finished in state FAILED: {message}")
        reporter.report_state("FAILED", message, wait=HARD_STOP_GRACE_SECONDS,
                              exit_code=EXIT_FAILED)
        reporter.close(timeout=5.0)
        os._exit(EXIT_FAILED)

    timer = threading.Timer(timeout + HARD_STOP_GRACE_SECONDS, stop)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def user_traceback(exc: BaseException) -> str:
    """The exception's traceback without the runtime's own frames on top."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


_OWN_FILES = frozenset({__file__, flows_module.__file__})


def jsonable_result(value: Any) -> tuple[Any, str | None]:
    """The return value as JSON for the run's ``result``, and a note when it is not kept."""
    from pydantic_core import to_jsonable_python

    note = None
    try:
        data = to_jsonable_python(value)
    except Exception:
        data = repr(value)
        note = f"The result ({type(value).__name__}) is not JSON; keeping its repr()"
    size = len(json.dumps(data, default=str))
    if size > MAX_RESULT_BYTES:
        return None, f"The result is too large to keep ({size} bytes of JSON)"
    return data, note


# ---------------------------------------------------------------------------- output


def reporter_lines(reporter: Reporter, stream: str, text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        reporter.log(stream, line)


class _LineSink(io.TextIOBase):
    """A text stream that sends each complete line to the run's logs."""

    def __init__(self, stream: str, reporter: Reporter, original: TextIO, echo: bool):
        super().__init__()
        self.stream = stream
        self.reporter = reporter
        self.original = original
        self.echo = echo
        self._partial = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that writes to the descriptor itself reaches the job's own output.
        return self.original.fileno()

    def write(self, text: str) -> int:
        if self.echo:
            self.original.write(text)
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self.reporter.log(self.stream, line.removesuffix("\r"))
        return len(text)

    def flush(self) -> None:
        if self.echo:
            self.original.flush()

    def finish(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self.reporter.log(self.stream, rest)


@contextmanager
def captured_output(reporter: Reporter) -> Iterator[None]:
    """sys.stdout and sys.stderr go to the run's logs (and to a terminal, if one is there)."""
    originals = sys.stdout, sys.stderr
    echo = bool(getattr(sys.__stdout__, "isatty", lambda: False)())
    sinks = [_LineSink(name, reporter, original, echo)
             for name, original in (("stdout", originals[0]), ("stderr", originals[1]))]
    sys.stdout, sys.stderr = sinks[0], sinks[1]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = originals
        for sink in sinks:
            sink.finish()


class _RunLogHandler(logging.Handler):
    def __init__(self, reporter: Reporter):
        super().__init__(logging.INFO)
        self.reporter = reporter
        self.setFormatter(logging.Formatter("%(levelname)s | %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, PRINT_RECORD_FLAG, False):
            return  # print()'s own output is captured already
        try:
            reporter_lines(self.reporter, "log", self.format(record))
        except Exception:
            self.handleError(record)


@contextmanager
def run_logger_to(reporter: Reporter) -> Iterator[None]:
    """The run logger's records (INFO and up) go to the run's logs, and only there."""
    logger = logging.getLogger(RUN_LOGGER_NAME)
    handler = _RunLogHandler(reporter)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


__all__ = ["FlowTimeout", "Outcome", "ParameterError", "RunIdentity", "execute",
           "load_flow", "main"]

if __name__ == "__main__":
    sys.exit(main())
