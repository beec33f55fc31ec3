"""A sandbox's poll result, mapped onto the shared phases.

Modal reports a sandbox as running (no result yet) or finished with a ``GenericResult``:
a status, an exit code and, for failures of Modal's own, an exception message.

| native state (GenericResult status)  | phase      | notes                               |
|--------------------------------------|------------|-------------------------------------|
| running (no result)                  | RUNNING    | create returns once it is scheduled |
| SUCCESS                              | SUCCEEDED  | exit code 0                         |
| FAILURE                              | FAILED     | the command's non-zero exit code    |
| TERMINATED                           | CANCELLED  | terminate() (exit code 137)         |
| TIMEOUT                              | FAILED     | ran past ``timeout`` (exit code 124)|
| IDLE_TIMEOUT                         | FAILED     | ran past ``options.idle_timeout``   |
| INIT_FAILURE                         | CRASHED    | never started: image, secret, mount |
| INTERNAL_FAILURE                     | CRASHED    | Modal's own failure                 |
| MEMORY_MANAGER_EVICTION, MEMORY_THRASHING_EVICTION, KERNEL_OOM_KILL | CRASHED | out of memory |
| any other (a newer Modal status)     | CRASHED    | a status this adapter does not know |
| not found                            | MISSING    |                                     |

The status numbers are Modal's (``modal_proto.api_pb2.GenericResult``); they are copied
here so that mapping needs no SDK import (a test checks they still match).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.base import InfraPhase, InfraStatus

UNSPECIFIED, SUCCESS, FAILURE, TERMINATED, TIMEOUT = 0, 1, 2, 3, 4
INIT_FAILURE, INTERNAL_FAILURE, IDLE_TIMEOUT = 5, 6, 7
MEMORY_MANAGER_EVICTION, MEMORY_THRASHING_EVICTION, KERNEL_OOM_KILL = 8, 9, 10

# native state name -> GenericResult status number (None: running, no result yet; Modal
# sends status UNSPECIFIED, 0, for "no result" too)
NATIVE_STATES: dict[str, int | None] = {
    "RUNNING": None,
    "SUCCESS": SUCCESS,
    "FAILURE": FAILURE,
    "TERMINATED": TERMINATED,
    "TIMEOUT": TIMEOUT,
    "IDLE_TIMEOUT": IDLE_TIMEOUT,
    "INIT_FAILURE": INIT_FAILURE,
    "INTERNAL_FAILURE": INTERNAL_FAILURE,
    "MEMORY_MANAGER_EVICTION": MEMORY_MANAGER_EVICTION,
    "MEMORY_THRASHING_EVICTION": MEMORY_THRASHING_EVICTION,
    "KERNEL_OOM_KILL": KERNEL_OOM_KILL,
}

EXPECTED_PHASES: dict[str, InfraPhase] = {
    "RUNNING": InfraPhase.RUNNING,
    "SUCCESS": InfraPhase.SUCCEEDED,
    "FAILURE": InfraPhase.FAILED,
    "TERMINATED": InfraPhase.CANCELLED,
    "TIMEOUT": InfraPhase.FAILED,
    "IDLE_TIMEOUT": InfraPhase.FAILED,
    "INIT_FAILURE": InfraPhase.CRASHED,
    "INTERNAL_FAILURE": InfraPhase.CRASHED,
    "MEMORY_MANAGER_EVICTION": InfraPhase.CRASHED,
    "MEMORY_THRASHING_EVICTION": InfraPhase.CRASHED,
    "KERNEL_OOM_KILL": InfraPhase.CRASHED,
}

_OOM = (MEMORY_MANAGER_EVICTION, MEMORY_THRASHING_EVICTION, KERNEL_OOM_KILL)
TIMEOUT_EXIT, TERMINATED_EXIT = 124, 137  # what the modal client reports as returncode


def result_status(result: Any) -> InfraStatus:
    """The phase of a sandbox from its ``GenericResult`` (None or status 0 unset: running).

    ``result`` is duck-typed (``status``, ``exitcode``, ``exception``) so the mapping is
    testable without the SDK."""
    status = int(getattr(result, "status", UNSPECIFIED) or UNSPECIFIED) if result else 0
    if status == UNSPECIFIED:
        return InfraStatus(InfraPhase.RUNNING)
    exit_code = int(getattr(result, "exitcode", 0) or 0)
    modal_says = str(getattr(result, "exception", "") or "").strip()

    def because(summary: str) -> str:
        return f"{summary}: {modal_says}" if modal_says else summary

    if status == SUCCESS:
        return InfraStatus(InfraPhase.SUCCEEDED, 0)
    if status == FAILURE:
        return InfraStatus(InfraPhase.FAILED, exit_code,
                           because(f"the sandbox's command exited with code {exit_code}"))
    if status == TERMINATED:
        return InfraStatus(InfraPhase.CANCELLED, TERMINATED_EXIT,
                           because("the sandbox was terminated"))
    if status == TIMEOUT:
        return InfraStatus(InfraPhase.FAILED, TIMEOUT_EXIT,
                           because("the sandbox ran past its timeout and Modal stopped it"))
    if status == IDLE_TIMEOUT:
        return InfraStatus(InfraPhase.FAILED, exit_code or None,
                           because("the sandbox was idle past its idle_timeout"))
    if status == INIT_FAILURE:
        return InfraStatus(InfraPhase.CRASHED, None,
                           because("the sandbox failed to start (image, secret or mount)"))
    if status == INTERNAL_FAILURE:
        return InfraStatus(InfraPhase.CRASHED, None, because("Modal failed the sandbox"))
    if status in _OOM:
        return InfraStatus(InfraPhase.CRASHED, exit_code or None,
                           because("the sandbox ran out of memory; raise memory"))
    return InfraStatus(InfraPhase.CRASHED, exit_code or None,
                       because(f"the sandbox ended with Modal status {status}, which this "
                               "version of pushpool does not know"))


def missing_status(sandbox_id: str, detail: str = "") -> InfraStatus:
    text = f"Modal has no sandbox {sandbox_id}"
    return InfraStatus(InfraPhase.MISSING, None, f"{text}: {detail}" if detail else text)


@dataclass(frozen=True)
class _Result:
    status: int
    exitcode: int = 0
    exception: str = ""


def native_result(sandbox: Any) -> Any:
    """The ``GenericResult`` of a polled sandbox handle, or None while it runs.

    The public handle shows only ``returncode``, which reads 0 for a sandbox that failed
    to start; the result itself sits on the implementation object behind modal's
    synchronicity wrapper. If a modal release moves it, fall back to what ``returncode``
    tells (losing only Modal's failure message and the init-failure case).
    """
    try:
        from modal._utils.async_utils import synchronizer

        inner = synchronizer._translate_in(sandbox)
        impl = getattr(inner, "_impl", None)
        if impl is not None and hasattr(impl, "result"):
            result = impl.result
            return result if result is not None and result.status else None
    except Exception:  # internals moved: use the public returncode below
        pass
    code = sandbox.returncode
    if code is None:
        return None
    if code == 0:
        return _Result(SUCCESS)
    return _Result({TIMEOUT_EXIT: TIMEOUT, TERMINATED_EXIT: TERMINATED}.get(code, FAILURE),
                   code)
