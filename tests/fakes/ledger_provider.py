"""A provider whose record of submissions outlives the process (pool type ``ledger``).

It stands in for a cloud in the crash and outage tests. Every submit appends a ``call``
line to a ledger file, and a ``create`` line the first time a job name is seen, with
O_APPEND and fsync before it answers; a second submit of the same job name returns the
existing infra id without a new creation, the way ECS client tokens or Cloud Run job names
do. A ``kill -9`` of the server therefore loses nothing the "cloud" did, and the test
counts creations per run id at the provider. The ledger is shared by every process under an
exclusive ``flock``; each line is one ``write()``, so a killed writer never leaves half a line.

A created job runs for ``PUSHPOOL_LEDGER_RUN_SECONDS`` (default 0.3) and then SUCCEEDED;
``cancel`` appends a ``cancel`` line and the job is CANCELLED from then on.
``PUSHPOOL_LEDGER_ANSWER_DELAY`` (default 0) holds each answer back after the ledger is
written, like a slow cloud API: a kill in that window is the lost-answer case that an
idempotent resubmit must survive. Registered in a server with
``PUSHPOOL_EXTRA_PROVIDERS='{"ledger": "tests.fakes.ledger_provider"}'`` and
``PUSHPOOL_LEDGER_PATH`` set (PYTHONPATH must include the repository root).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, ValidationError

from providers.base import (
    COMMON_VARIABLES,
    InfraPhase,
    InfraRef,
    InfraStatus,
    JobSpec,
    LogBatch,
    PermanentProviderError,
    ProviderConfig,
    ProvisionPlan,
)

PATH_VARIABLE = "PUSHPOOL_LEDGER_PATH"
RUN_SECONDS_VARIABLE = "PUSHPOOL_LEDGER_RUN_SECONDS"
ANSWER_DELAY_VARIABLE = "PUSHPOOL_LEDGER_ANSWER_DELAY"
INFRA_PREFIX = "ledger-"


@dataclass(frozen=True)
class LedgerEntry:
    """One line of the ledger: a submit call, or the creation it caused."""

    kind: str  # "call" | "create" | "cancel"
    job_name: str
    run_id: str
    attempt: int
    infra_id: str
    at: float  # time.time() when written
    pid: int


@dataclass
class Ledger:
    """Everything the ledger file holds, in order."""

    entries: list[LedgerEntry]

    @property
    def calls(self) -> list[LedgerEntry]:
        return [e for e in self.entries if e.kind == "call"]

    @property
    def creations(self) -> list[LedgerEntry]:
        return [e for e in self.entries if e.kind == "create"]

    @property
    def cancels(self) -> list[LedgerEntry]:
        return [e for e in self.entries if e.kind == "cancel"]

    def creations_per_run(self) -> Counter[str]:
        return Counter(e.run_id for e in self.creations)

    def calls_per_run(self) -> Counter[str]:
        return Counter(e.run_id for e in self.calls)


def _parse(data: bytes) -> tuple[list[LedgerEntry], int]:
    """Entries in ``data`` and how many bytes they used (a partial last line is left)."""
    end = data.rfind(b"\n") + 1
    entries = [LedgerEntry(**json.loads(line)) for line in data[:end].splitlines() if line]
    return entries, end


def read_ledger(path: Path) -> Ledger:
    """The ledger as it is on disk now (empty if nothing was submitted yet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Ledger([])
    return Ledger(_parse(data)[0])


def count_lines(path: Path) -> tuple[int, int]:
    """(calls, creations) so far: cheap enough to poll while a test waits for a kill point."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, 0
    return data.count(b'"kind": "call"'), data.count(b'"kind": "create"')


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise PermanentProviderError(f"{name}={raw!r} is not a number of seconds; "
                                     f"set it to e.g. {default}") from None


class LedgerConfig(ProviderConfig):
    """Accepts any job configuration: templates are not what these tests are about."""

    model_config = ConfigDict(extra="allow")


class LedgerProvider:
    pool_type: ClassVar[str] = "ledger"
    config_model: ClassVar[type[ProviderConfig]] = LedgerConfig
    poll_interval: ClassVar[float] = 0.2

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one writer thread at a time in this process
        self._offset = 0  # bytes of the ledger already read into _created
        self._created: dict[str, LedgerEntry] = {}  # infra id -> its creation
        self._cancelled: set[str] = set()

    def _path(self) -> Path:
        raw = os.environ.get(PATH_VARIABLE)
        if not raw:
            raise PermanentProviderError(f"{PATH_VARIABLE} is not set; set it to the file "
                                         "the ledger provider appends its submits to")
        return Path(raw)

    def _catch_up(self, fd: int) -> None:
        """Read what any process appended since we last looked (caller holds the lock)."""
        size = os.fstat(fd).st_size
        if size <= self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        entries, used = _parse(data)
        self._offset += used
        for entry in entries:
            if entry.kind == "create":
                self._created.setdefault(entry.infra_id, entry)
            elif entry.kind == "cancel":
                self._cancelled.add(entry.infra_id)

    def _append(self, lines: Callable[[], list[dict[str, Any]]]) -> None:
        """Append what ``lines()`` says, deciding under the ledger's lock with every other
        process's lines read first; one write, fsynced before the caller answers."""
        with self._lock:
            fd = os.open(self._path(), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other processes (a restarted server)
                self._catch_up(fd)
                data = "".join(json.dumps(line) + "\n" for line in lines()).encode()
                if data:
                    os.write(fd, data)
                    os.fsync(fd)
                    self._catch_up(fd)
            finally:
                os.close(fd)  # releases the flock

    def _submit_sync(self, spec: JobSpec) -> str:
        infra_id = INFRA_PREFIX + spec.job_name

        def lines() -> list[dict[str, Any]]:
            base = {"job_name": spec.job_name, "run_id": spec.run_id, "attempt": spec.attempt,
                    "infra_id": infra_id, "at": time.time(), "pid": os.getpid()}
            made = [] if infra_id in self._created else [{"kind": "create", **base}]
            return [{"kind": "call", **base}, *made]

        self._append(lines)
        return infra_id

    def _cancel_sync(self, infra_id: str) -> None:
        def lines() -> list[dict[str, Any]]:
            job = self._created.get(infra_id)
            if job is None or infra_id in self._cancelled:
                return []
            return [{**asdict(job), "kind": "cancel", "at": time.time(), "pid": os.getpid()}]

        self._append(lines)

    def _refresh(self) -> None:
        path = self._path()
        with self._lock:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                self._catch_up(fd)
            finally:
                os.close(fd)

    def default_base_job_template(self) -> dict[str, Any]:
        return {
            "job_configuration": {"command": "{{ command }}", "env": "{{ env }}",
                                  "labels": "{{ labels }}"},
            "variables": {"type": "object", "properties": dict(COMMON_VARIABLES)},
        }

    def validate_config(self, config: Mapping[str, Any]) -> None:
        try:
            LedgerConfig.model_validate(dict(config))
        except ValidationError as exc:
            raise ValueError(f"job_configuration: {exc}") from None

    async def submit(self, spec: JobSpec) -> InfraRef:
        infra_id = await asyncio.to_thread(self._submit_sync, spec)
        delay = _float_env(ANSWER_DELAY_VARIABLE, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)  # the cloud's answer is on its way back
        return InfraRef(infra_id=infra_id)

    async def status(self, ref: InfraRef) -> InfraStatus:
        return (await self.status_many([ref]))[ref.infra_id]

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        infra_ids = [ref.infra_id for ref in refs]
        await asyncio.to_thread(self._refresh)
        run_seconds = _float_env(RUN_SECONDS_VARIABLE, 0.3)
        now = time.time()
        statuses: dict[str, InfraStatus] = {}
        for infra_id in infra_ids:
            created = self._created.get(infra_id)
            if created is None:
                statuses[infra_id] = InfraStatus(InfraPhase.MISSING,
                                                 reason=f"{infra_id} is not in the ledger")
            elif infra_id in self._cancelled:
                statuses[infra_id] = InfraStatus(InfraPhase.CANCELLED)
            elif now - created.at < run_seconds:
                statuses[infra_id] = InfraStatus(InfraPhase.RUNNING)
            else:
                statuses[infra_id] = InfraStatus(InfraPhase.SUCCEEDED, 0)
        return statuses

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        await asyncio.to_thread(self._cancel_sync, ref.infra_id)

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        return LogBatch([], cursor)

    async def cleanup(self, ref: InfraRef) -> None:
        return None

    async def provision(self, pool_name: str, options: Mapping[str, Any],
                        apply: bool) -> ProvisionPlan:
        return ProvisionPlan(target="a ledger file", steps=[])

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool) -> ProvisionPlan:
        return ProvisionPlan(target="a ledger file", steps=[])

    async def close(self) -> None:
        return None


PROVIDER = LedgerProvider()
