"""A sandbox's state, mapped onto the shared phases.

Modal records a finished sandbox as a ``GenericResult``: a status, an exit code and, for
failures of Modal's own, a message. The table is that native mapping (``result_status``;
the conformance suite checks it):

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

What the adapter can read, though, is narrower: the modal client's public API shows a
polled sandbox only as ``Sandbox.returncode`` (the result itself sits behind the client's
synchronicity wrapper, and the gRPC stub of ``Client`` is documented as unsupported). ``returncode``
folds TIMEOUT into 124, TERMINATED into 137 and every other status into its exit code, so
``returncode_status`` tells SUCCESS, FAILURE, TIMEOUT and TERMINATED apart and reads the
rest by their exit code, without Modal's message. Failures to start that Modal reports
while creating (an image that does not build, a missing secret) are still refused at
submit with Modal's words; one after the create reads as its exit code.

The status numbers are Modal's (``modal_proto.api_pb2.GenericResult``); they are copied
here so that mapping needs no SDK import (a test checks they still match).
"""

from __future__ import annotations

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


def returncode_status(code: int | None) -> InfraStatus:
    """The phase from what the public API shows, ``Sandbox.returncode`` (None: running)."""
    if code is None:
        return InfraStatus(InfraPhase.RUNNING)
    if code == 0:
        return InfraStatus(InfraPhase.SUCCEEDED, 0)
    if code == TIMEOUT_EXIT:
        return InfraStatus(InfraPhase.FAILED, code,
                           "the sandbox ran past its timeout and Modal stopped it (exit 124)")
    if code == TERMINATED_EXIT:
        return InfraStatus(InfraPhase.CANCELLED, code,
                           "the sandbox was terminated or killed (exit 137; out of memory "
                           "looks the same: raise memory if nobody cancelled it)")
    return InfraStatus(InfraPhase.FAILED, code,
                       f"the sandbox's command exited with code {code}")
