"""The cloud-run:push adapter: one Cloud Run job per deployment and template, one
execution per run attempt.

``submit`` finds or creates the job for the run's content (``jobs``; a changed template
makes a new job and retires the deployment's old ones), adopts an execution an earlier,
interrupted try started (``run_job`` is not idempotent: the job's recent executions are
searched for this run's id and attempt in their environment), and otherwise calls
``run_job`` with the run's overrides through the project's run token bucket
(``providers.ratelimit``). The returned ``InfraRef`` carries the ``connection.Connection``
(project, region, endpoint, identity), so any process can follow the run. Status is the
execution plus, for a failed one, its tasks (``status`` documents the mapping); a
transient error while reading leaves the run as it was. Cancel is ``cancel_execution``;
logs are Cloud Logging entries (``logs``); cleanup deletes retired jobs with no active
execution. Pub/Sub and Eventarc deliveries: ``events``. Provisioning: ``provision``.

Settings come from ``PUSHPOOL_CLOUD_RUN_*`` environment variables (``CloudRunSettings``).
Every SDK call runs in a bounded thread pool (``connection.GoogleClients``), never on
the event loop; the SDK is imported on first use, never by importing this package.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from providers.base import (
    EventDelivery,
    InfraPhase,
    InfraRef,
    InfraStatus,
    JobSpec,
    LogBatch,
    PermanentProviderError,
    ProviderConfig,
    ProvisionPlan,
    ProvisionStep,
    RetryableProviderError,
)
from providers.cloud_run.config import CloudRunConfig
from providers.cloud_run.config import default_base_job_template as _default_template
from providers.cloud_run.config import validate_config as _validate_config
from providers.cloud_run.connection import (
    RUN_HOST,
    Connection,
    GoogleClients,
    connection_for,
    default_project,
    key_project,
)
from providers.cloud_run.errors import is_conflict, is_not_found, provider_error
from providers.cloud_run.events import EventAuth, TokenVerifier, parse_delivery, parse_event
from providers.cloud_run.jobs import (
    DEPLOYMENT_LABEL,
    MANAGED_LABEL,
    RETIRED_LABEL,
    TEMPLATE_LABEL,
    build_job,
    console_url,
    content_hash,
    finish_job,
    is_attempt,
    job_id_for,
    job_of,
    run_overrides,
)
from providers.cloud_run.logs import Cursor, entries_of, log_filter, next_batch, rfc3339
from providers.cloud_run.provision import PROVISION_OPTIONS
from providers.cloud_run.status import execution_status, is_active, missing_status, needs_tasks
from providers.env_settings import values_from_env
from providers.provision_options import ProvisionOption
from providers.ratelimit import AdaptiveTokenBucket

__all__ = ["PROVIDER", "CloudRunProvider", "CloudRunSettings", "Target"]

T = TypeVar("T")
KNOWN_JOBS = 4096


@dataclass(frozen=True)
class CloudRunSettings:
    """Tunables, read from ``PUSHPOOL_CLOUD_RUN_<FIELD>`` (e.g. ..._RUN_JOB_RATE=3)."""

    run_job_rate: float = 1.0  # run_job calls per second per project and region
    run_job_burst: float = 10.0
    run_job_min_rate: float = 0.1  # throttling never slows run_job below this
    max_run_wait: float = 5.0  # a longer wait for a token is refused (retryable)
    max_workers: int = 16  # threads for SDK calls
    request_timeout: float = 30.0  # seconds per HTTP request
    read_attempts: int = 2  # a read's tries on 5xx/timeouts within one call
    backoff_base: float = 0.2
    backoff_cap: float = 2.0
    lro_poll_initial: float = 0.2  # first poll of a create_job operation
    create_wait_seconds: float = 120.0  # how long submit waits for a new job to be made
    # How far back a submit looks for an execution an earlier try started (run_job is not
    # idempotent): the newest adopt_pages * adopt_page_size executions of the job, none
    # older than adopt_window_seconds. Parsing them costs CPU (about 0.6 ms each).
    adopt_pages: int = 2
    adopt_page_size: int = 50
    adopt_window_seconds: float = 900.0  # executions older than this are not searched
    # A status pass lists a job's executions once it follows this many of them.
    list_status_from: int = 3
    list_status_page_size: int = 100
    list_status_pages: int = 20
    retired_grace_seconds: float = 600.0  # a retired job's executions rest this long first
    sweep_interval: float = 60.0  # retired jobs of a deployment are looked at this often
    log_read_rate: float = 1.0  # entries.list calls per second per project (quota: 60/min)
    log_read_burst: float = 10.0
    log_page_size: int = 1000
    events_audience: str | None = None  # the push subscription's OIDC audience
    events_service_account: str | None = None
    events_certs_url: str = "https://www.googleapis.com/oauth2/v3/certs"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CloudRunSettings:
        return cls(**values_from_env(cls, "PUSHPOOL_CLOUD_RUN_", environ))


@dataclass(frozen=True)
class Target:
    """What a reference points at: the connection, the execution, submit facts."""

    conn: Connection
    execution: str
    submitted_at: float | None
    keep_job: bool

    @classmethod
    def of(cls, ref: InfraRef) -> Target:
        facts = ref.connection or {}
        if "/executions/" not in ref.infra_id:
            raise PermanentProviderError(f"not a Cloud Run reference: {ref.infra_id!r} is not "
                                         "an execution name")
        submitted = facts.get("submitted_at")
        return cls(Connection.from_facts(facts), ref.infra_id,
                   float(submitted) if isinstance(submitted, int | float) else None,
                   bool(facts.get("keep_job")))

    @property
    def job(self) -> str:
        return job_of(self.execution)


def to_json(message: Any) -> dict[str, Any]:
    """A proto-plus message as the API's camelCase JSON (enum names), for ``status``."""
    from google.protobuf import json_format

    result: dict[str, Any] = json_format.MessageToDict(type(message).pb(message))
    return result


class CloudRunProvider:
    """Google Cloud Run jobs push pools (``cloud-run:push``)."""

    pool_type: ClassVar[str] = "cloud-run:push"
    config_model: ClassVar[type[ProviderConfig]] = CloudRunConfig
    # What ``provision`` takes (``work-pool create --provision-infra --infra-option``).
    provision_options: ClassVar[tuple[ProvisionOption, ...]] = PROVISION_OPTIONS
    # Executions take seconds to start; pushed events make polling only the fallback.
    poll_interval: ClassVar[float] = float(
        os.environ.get("PUSHPOOL_CLOUD_RUN_POLL_INTERVAL") or 5.0)

    def __init__(self, settings: CloudRunSettings | None = None):
        self.settings = settings or CloudRunSettings.from_env()
        self.google = GoogleClients(self.settings.max_workers)
        self._buckets: dict[tuple[str, str], AdaptiveTokenBucket] = {}
        self._log_buckets: dict[str, AdaptiveTokenBucket] = {}
        self._known_jobs: dict[str, float] = {}  # job name -> when it was last seen
        self._swept: dict[tuple[str, str, str], float] = {}
        self._ensuring: dict[str, asyncio.Task[None]] = {}
        self._verifier = TokenVerifier(EventAuth(self.settings.events_audience,
                                                 self.settings.events_service_account,
                                                 self.settings.events_certs_url))

    # ------------------------------------------------------------------ configuration

    def default_base_job_template(self) -> dict[str, Any]:
        return _default_template()

    def validate_config(self, config: Mapping[str, Any]) -> None:
        _validate_config(config)

    def run_bucket(self, conn: Connection) -> AdaptiveTokenBucket:
        """The run_job token bucket of a project and region (for inspection and tests).

        Cloud Run meters "job run requests per minute per region" per project; a 429
        halves the rate and successes bring it back over a minute."""
        key = (conn.project, conn.region)
        bucket = self._buckets.get(key)
        if bucket is None:
            s = self.settings
            bucket = self._buckets[key] = AdaptiveTokenBucket(
                s.run_job_rate, s.run_job_burst, min_rate=s.run_job_min_rate, recovery=60.0)
        return bucket

    async def _connection(self, cfg: CloudRunConfig) -> Connection:
        project = cfg.project or key_project(cfg) or default_project()
        if project is None and not cfg.api_endpoint:
            project = await self.google.call(_adc_project)
        return connection_for(cfg, project)

    # ------------------------------------------------------------------ calls

    async def _rpc(self, conn: Connection, service: str, method: str, what: str,
                   **kwargs: Any) -> Any:
        """One SDK call in the pool; SDK errors become the contract's errors."""
        client = await self.google.run_client(conn, service)
        fn = getattr(client, method)

        def call() -> Any:
            return fn(**kwargs, retry=None, timeout=self.settings.request_timeout)

        try:
            return await self.google.call(call)
        except Exception as exc:
            raise provider_error(exc, what) from exc

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        """A read, tried again on a transient error (not on throttling: that goes to the
        caller, whose pass is skipped rather than made to wait)."""
        s = self.settings
        for attempt in range(1, s.read_attempts + 1):
            try:
                return await call()
            except RetryableProviderError as exc:
                if exc.throttled or attempt >= s.read_attempts:
                    raise
                delay = min(s.backoff_cap, s.backoff_base * 2 ** (attempt - 1))
                await asyncio.sleep(delay / 2 + random.random() * delay / 2)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ submit

    async def submit(self, spec: JobSpec) -> InfraRef:
        try:
            cfg = _validate_config(spec.config)
        except ValueError as exc:
            raise PermanentProviderError(f"invalid cloud-run:push job configuration: {exc}"
                                         ) from None
        image = spec.image or cfg.image
        if not image:
            raise PermanentProviderError("image: no container image is set; set image in the "
                                         "deployment or the pool")
        conn = await self._connection(cfg)
        try:
            body = build_job(spec, cfg, image)
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from None
        digest = content_hash(body)
        job_id = job_id_for(spec, digest)
        job_name = f"{conn.parent}/jobs/{job_id}"
        job_body = finish_job(body, digest)
        if job_name not in self._known_jobs:
            await self._ensure_job(conn, job_id, job_body, digest)
        overrides = run_overrides(spec, cfg)
        try:
            execution = await self._start(conn, job_name, spec, overrides)
        except PermanentProviderError as exc:
            if not is_not_found(exc.__cause__ or exc):
                raise
            # The job went away after this process saw it (deleted by hand): make it again.
            self._known_jobs.pop(job_name, None)
            await self._ensure_job(conn, job_id, job_body, digest)
            execution = await self._start(conn, job_name, spec, overrides)
        return self._ref(conn, execution, cfg)

    async def _start(self, conn: Connection, job_name: str, spec: JobSpec,
                     overrides: dict[str, Any]) -> str:
        if spec.retried:  # an earlier call may have started it: adopt, never start twice
            found = await self._find_attempt(conn, job_name, spec.run_id, spec.attempt)
            if found is not None:
                return found
        return await self._run_job(conn, job_name, overrides)

    def _ref(self, conn: Connection, execution: str, cfg: CloudRunConfig) -> InfraRef:
        facts = {**conn.facts(), "submitted_at": time.time(), "keep_job": cfg.keep_job}
        return InfraRef(execution, facts, console_url(execution))

    def _remember(self, job_name: str) -> None:
        self._known_jobs[job_name] = time.monotonic()
        if len(self._known_jobs) > KNOWN_JOBS:
            oldest = min(self._known_jobs, key=self._known_jobs.__getitem__)
            self._known_jobs.pop(oldest, None)

    async def _ensure_job(self, conn: Connection, job_id: str, body: dict[str, Any],
                          digest: str) -> None:
        """Get or create the job, once per job at a time in this process (500 submits
        that arrive together make one create_job, not 500)."""
        name = f"{conn.parent}/jobs/{job_id}"
        loop = asyncio.get_running_loop()
        pending = self._ensuring.get(name)
        if pending is None or pending.get_loop() is not loop or pending.done():
            pending = loop.create_task(self._get_or_create_job(conn, job_id, body, digest))
            self._ensuring[name] = pending
        try:
            await asyncio.shield(pending)
        finally:
            if pending.done() and self._ensuring.get(name) is pending:
                self._ensuring.pop(name, None)

    async def _get_or_create_job(self, conn: Connection, job_id: str, body: dict[str, Any],
                                 digest: str) -> None:
        """Get or create the job; a job made (or brought back) retires the deployment's
        other jobs."""
        from google.cloud import run_v2

        name = f"{conn.parent}/jobs/{job_id}"
        try:
            existing = await self._read(lambda: self._rpc(
                conn, "jobs", "get_job", f"reading Cloud Run job {job_id}", name=name))
        except PermanentProviderError as exc:
            if not is_not_found(exc.__cause__ or exc):
                raise
            existing = None
        if existing is not None:
            labels = dict(existing.labels)
            if RETIRED_LABEL in labels:  # the template came back: this job is current again
                labels.pop(RETIRED_LABEL)
                await self._relabel(conn, existing, labels)
                await self._retire_others(conn, labels.get(DEPLOYMENT_LABEL), digest)
            self._remember(name)
            return
        job = run_v2.Job.from_json(json.dumps(body), ignore_unknown_fields=False)
        try:
            operation = await self._rpc(conn, "jobs", "create_job",
                                        f"creating Cloud Run job {job_id}",
                                        parent=conn.parent, job=job, job_id=job_id)
        except PermanentProviderError as exc:
            if not is_conflict(exc.__cause__ or exc):
                raise
            operation = None  # another replica made it first
        if operation is not None:
            await self._wait(operation, f"creating Cloud Run job {job_id}")
        self._remember(name)
        await self._retire_others(conn, body.get("labels", {}).get(DEPLOYMENT_LABEL), digest)

    async def _wait(self, operation: Any, what: str) -> Any:
        from google.api_core.future.polling import DEFAULT_POLLING

        s = self.settings
        polling = DEFAULT_POLLING.with_delay(initial=s.lro_poll_initial, maximum=2.0,
                                             multiplier=1.5)
        try:
            return await self.google.call(operation.result, timeout=s.create_wait_seconds,
                                          polling=polling)
        except Exception as exc:
            if isinstance(exc, TimeoutError | concurrent_timeout()):
                raise RetryableProviderError(f"{what}: still not done after "
                                             f"{s.create_wait_seconds:g}s") from exc
            raise provider_error(exc, what) from exc

    async def _relabel(self, conn: Connection, job: Any, labels: Mapping[str, str]) -> None:
        from google.cloud import run_v2

        # The job as read (its etag makes a concurrent change fail, not get lost; Google
        # ignores output-only fields), with new labels.
        updated = run_v2.Job(job)
        updated.labels.clear()
        updated.labels.update(labels)
        await self._rpc(conn, "jobs", "update_job", f"labelling Cloud Run job {job.name}",
                        job=updated)

    async def _retire_others(self, conn: Connection, deployment: str | None,
                             digest: str) -> None:
        """Mark the deployment's jobs of other templates retired (best effort: a failure
        leaves them current, and the next new job retires them)."""
        if not deployment or deployment == "none":
            return
        try:
            jobs = await self._list_jobs(conn)
            for job in jobs:
                labels = dict(job.labels)
                if labels.get(DEPLOYMENT_LABEL) != deployment or \
                        labels.get(MANAGED_LABEL) != "pushpool" or \
                        labels.get(TEMPLATE_LABEL) == digest or RETIRED_LABEL in labels:
                    continue
                labels[RETIRED_LABEL] = str(int(time.time()))
                await self._relabel(conn, job, labels)
                self._known_jobs.pop(job.name, None)
        except RetryableProviderError:
            return

    async def _list_jobs(self, conn: Connection) -> list[Any]:
        pager = await self._rpc(conn, "jobs", "list_jobs", "listing Cloud Run jobs",
                                parent=conn.parent)
        try:
            return await self.google.call(list, pager)
        except Exception as exc:
            raise provider_error(exc, "listing Cloud Run jobs") from exc

    async def _find_attempt(self, conn: Connection, job_name: str, run_id: str,
                            attempt: int) -> str | None:
        """An execution of this job started for this run attempt (an earlier try whose
        answer was lost), searched in the job's most recent executions (at most
        ``adopt_window_seconds`` old)."""
        s = self.settings
        horizon = time.time() - s.adopt_window_seconds
        async for items in self._execution_pages(
                conn, job_name, "name,createTime,template/containers/env",
                s.adopt_page_size, s.adopt_pages):
            for execution in items:
                if is_attempt(execution, run_id, attempt):
                    return str(execution["name"])
            if _created(items[-1]) < horizon:
                return None
        return None

    async def _execution_pages(self, conn: Connection, job_name: str, fields: str,
                               page_size: int, pages: int) -> AsyncIterator[list[Any]]:
        """The job's executions, newest first, a page at a time (at most ``pages``; an
        empty page ends it), read over plain REST with a partial response (``fields`` of
        each execution) and ``json.loads``: the SDK's pager would parse each whole
        Execution into a proto (about 0.6 ms of CPU apiece, the bulk of a call's cost)."""
        s = self.settings
        session = await self.google.call(self.google.session, conn)
        base = (conn.endpoint or RUN_HOST).rstrip("/")

        def page(token: str | None) -> dict[str, Any]:
            params = {"pageSize": str(page_size),
                      "fields": f"executions({fields}),nextPageToken"}
            if token:
                params["pageToken"] = token
            response = session.get(f"{base}/v2/{job_name}/executions", params=params,
                                   timeout=s.request_timeout)
            if response.status_code >= 400:
                raise _http_error(response)
            data: dict[str, Any] = response.json()
            return data

        token: str | None = None
        for _ in range(pages):
            async def read(current: str | None = token) -> dict[str, Any]:
                return await self._plain(page, current)

            data = await self._read(read)
            items = data.get("executions") or []
            if not items:
                return
            yield items
            token = data.get("nextPageToken")
            if not token:
                return

    async def _plain(self, fn: Callable[[str | None], dict[str, Any]],
                     token: str | None) -> dict[str, Any]:
        try:
            return await self.google.call(fn, token)
        except Exception as exc:
            raise provider_error(exc, "listing Cloud Run executions") from exc

    async def _run_job(self, conn: Connection, job_name: str,
                       overrides: dict[str, Any]) -> str:
        from google.cloud import run_v2

        bucket = self.run_bucket(conn)
        wait = bucket.wait_time()
        if wait > self.settings.max_run_wait:
            # Refused at once: the dispatcher backs off instead of holding its claim
            # while this sleeps.
            raise RetryableProviderError(
                f"holding back run_job for {wait:.1f}s to stay under Cloud Run's run "
                f"request quota ({bucket.rate:g}/s now; PUSHPOOL_CLOUD_RUN_RUN_JOB_RATE)",
                throttled=True, retry_after=wait)
        await bucket.acquire()
        request = run_v2.RunJobRequest.from_json(
            json.dumps({"name": job_name, "overrides": overrides}), ignore_unknown_fields=False)
        try:
            operation = await self._rpc(conn, "jobs", "run_job",
                                        f"starting an execution of {job_name.rsplit('/', 1)[-1]}",
                                        request=request)
        except RetryableProviderError as exc:
            if exc.throttled:
                bucket.on_throttle()
            raise
        bucket.on_success()
        metadata = operation.metadata
        name = str(getattr(metadata, "name", "") or "")
        if "/executions/" not in name:
            raise RetryableProviderError(f"run_job for {job_name} answered without the "
                                         "execution's name; the retry adopts it")
        return name

    # ------------------------------------------------------------------ status

    async def status(self, ref: InfraRef) -> InfraStatus:
        target = Target.of(ref)
        found = await self._status(target)
        return found

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        """The executions of a job with several followed runs are read from one listing of
        its newest executions (a partial response, parsed as plain JSON): a pass over a
        thousand active runs costs a few list calls, not a thousand reads competing with
        the submits for the CPU. The rest (a job's lone run, a failed execution whose exit
        code is on its tasks, one older than the listing reaches) get a read each,
        ``max_workers`` at a time. Ids that could not be read for a transient reason are
        left out (ask again later); if every read failed that way the error is raised."""
        result: dict[str, InfraStatus] = {}
        targets: list[tuple[InfraRef, Target]] = []
        for ref in refs:
            try:
                targets.append((ref, Target.of(ref)))
            except PermanentProviderError as exc:
                result[ref.infra_id] = InfraStatus(InfraPhase.CRASHED, None, str(exc))
        by_job: dict[tuple[str, tuple[Any, ...]], list[tuple[InfraRef, Target]]] = {}
        for ref, target in targets:
            by_job.setdefault((target.job, target.conn.client_key()), []).append((ref, target))
        unread: list[tuple[InfraRef, Target]] = []
        transient: list[BaseException] = []
        for (job, _), group in by_job.items():
            if len(group) < self.settings.list_status_from:
                unread += group
                continue
            try:
                listed = await self._listed_executions(group[0][1].conn, job, group)
            except RetryableProviderError as exc:
                # Throttled or unavailable: the group waits for the next pass (a read per
                # run instead would spend the same quota a thousand times over).
                transient.append(exc)
                continue
            for ref, target in group:
                data = listed.get(target.execution)
                if data is None or needs_tasks(data):
                    unread.append((ref, target))
                else:
                    result[ref.infra_id] = execution_status(data)
        semaphore = asyncio.Semaphore(self.settings.max_workers)

        async def one(target: Target) -> InfraStatus:
            async with semaphore:
                return await self._status(target)

        outcomes = await asyncio.gather(*(one(t) for _, t in unread), return_exceptions=True)
        for (ref, _), outcome in zip(unread, outcomes, strict=True):
            if isinstance(outcome, RetryableProviderError):
                transient.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                result[ref.infra_id] = outcome
        if transient and not result:
            raise transient[0]
        return result

    async def _listed_executions(self, conn: Connection, job: str,
                                 group: list[tuple[InfraRef, Target]]) -> dict[str, Any]:
        """The job's executions that ``group`` follows, by name, from its newest ones:
        pages are read until every one is found, the page reaches back past the oldest
        submit, or ``list_status_pages`` pages were read."""
        s = self.settings
        wanted = {target.execution for _, target in group}
        submitted = [t.submitted_at for _, t in group if t.submitted_at is not None]
        horizon = (min(submitted) - 300) if len(submitted) == len(group) else None
        found: dict[str, Any] = {}
        async for items in self._execution_pages(
                conn, job, "name,createTime,completionTime,conditions,runningCount,"
                "succeededCount,failedCount,cancelledCount",
                s.list_status_page_size, s.list_status_pages):
            for execution in items:
                name = str(execution.get("name") or "")
                if name in wanted:
                    found[name] = execution
            if len(found) == len(wanted) or (
                    horizon is not None and _created(items[-1]) < horizon):
                break
        return found

    async def _status(self, target: Target) -> InfraStatus:
        name = target.execution
        short = name.rsplit("/", 1)[-1]
        try:
            execution = await self._read(lambda: self._rpc(
                target.conn, "executions", "get_execution",
                f"reading Cloud Run execution {short}", name=name))
        except PermanentProviderError as exc:
            if is_not_found(exc.__cause__ or exc):
                return missing_status(name)
            raise
        data = to_json(execution)
        tasks: list[dict[str, Any]] = []
        if needs_tasks(data):
            tasks = await self._read(lambda: self._tasks(target.conn, name))
        return execution_status(data, tasks)

    async def _tasks(self, conn: Connection, execution: str) -> list[dict[str, Any]]:
        pager = await self._rpc(conn, "tasks", "list_tasks",
                                f"reading the tasks of {execution.rsplit('/', 1)[-1]}",
                                parent=execution)
        try:
            return await self.google.call(lambda: [to_json(t) for t in pager])
        except Exception as exc:
            raise provider_error(exc, "reading Cloud Run tasks") from exc

    # ------------------------------------------------------------------ cancel / cleanup

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        """cancel_execution: Cloud Run stops the tasks (SIGTERM, then SIGKILL after about
        10 s; it has no grace setting) and ends the execution's run_job operation."""
        target = Target.of(ref)
        short = target.execution.rsplit("/", 1)[-1]
        try:
            await self._rpc(target.conn, "executions", "cancel_execution",
                            f"cancelling Cloud Run execution {short}", name=target.execution)
        except PermanentProviderError as exc:
            cause = exc.__cause__ or exc
            if is_not_found(cause):
                return  # already gone: nothing to stop
            # Cloud Run refuses to cancel a finished execution: nothing to do then.
            status = await self._status(target)
            if status.phase.is_final:
                return
            raise

    async def cleanup(self, ref: InfraRef) -> None:
        """Delete the deployment's retired jobs that have no active execution and whose
        last execution ended ``retired_grace_seconds`` ago (unless ``keep_job``). At most
        one sweep per deployment per ``sweep_interval`` in this process."""
        target = Target.of(ref)
        if target.keep_job:
            return
        conn = target.conn
        try:
            job = await self._rpc(conn, "jobs", "get_job", "reading Cloud Run job",
                                  name=target.job)
        except PermanentProviderError as exc:
            if is_not_found(exc.__cause__ or exc):
                return
            raise
        deployment = dict(job.labels).get(DEPLOYMENT_LABEL)
        if not deployment or deployment == "none":
            return
        key = (conn.project, conn.region, deployment)
        now = time.monotonic()
        if now - self._swept.get(key, float("-inf")) < self.settings.sweep_interval:
            return
        self._swept[key] = now
        for candidate in await self._list_jobs(conn):
            labels = dict(candidate.labels)
            if labels.get(DEPLOYMENT_LABEL) != deployment or RETIRED_LABEL not in labels or \
                    labels.get(MANAGED_LABEL) != "pushpool":
                continue
            if await self._resting(conn, candidate, labels):
                await self._delete_job(conn, str(candidate.name))

    async def _resting(self, conn: Connection, job: Any, labels: Mapping[str, str]) -> bool:
        grace = self.settings.retired_grace_seconds
        try:
            retired = float(labels.get(RETIRED_LABEL) or 0)
        except ValueError:
            retired = 0.0
        if time.time() - retired < grace:
            return False
        pager = await self._rpc(conn, "executions", "list_executions",
                                "listing Cloud Run executions",
                                request={"parent": job.name, "page_size": 100})

        def quiet() -> bool:
            for execution in pager:
                data = to_json(execution)
                if is_active(data):
                    return False
                done = execution.completion_time
                if done and time.time() - done.timestamp() < grace:
                    return False
            return True

        try:
            return await self.google.call(quiet)
        except Exception as exc:
            raise provider_error(exc, "listing Cloud Run executions") from exc

    async def _delete_job(self, conn: Connection, name: str) -> None:
        try:
            await self._rpc(conn, "jobs", "delete_job", f"deleting Cloud Run job {name}",
                            name=name)
        except PermanentProviderError as exc:
            if not is_not_found(exc.__cause__ or exc):
                raise
        self._known_jobs.pop(name, None)

    # ------------------------------------------------------------------ logs

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        """Cloud Logging entries of the execution after ``cursor`` (see ``logs``); none
        when over the entries.list budget (the same cursor comes back)."""
        target = Target.of(ref)
        parsed = Cursor.decode(cursor)
        conn = target.conn
        budget = self._log_buckets.get(conn.project)
        if budget is None:
            s = self.settings
            budget = self._log_buckets[conn.project] = AdaptiveTokenBucket(
                s.log_read_rate, s.log_read_burst, min_rate=0.05)
        if not budget.try_acquire():
            return LogBatch([], cursor)
        if parsed is not None:
            since = parsed.timestamp
        else:
            start = (target.submitted_at or time.time() - 86400) - 60  # clock skew
            since = rfc3339(datetime.fromtimestamp(start, UTC))
        flt = log_filter(conn.project, conn.region, target.execution, since)
        client = await self.google.call(self.google.logging, conn)
        page_size = self.settings.log_page_size

        def read() -> list[Any]:
            from google.cloud import logging as cloud_logging

            return list(client.list_entries(resource_names=[f"projects/{conn.project}"],
                                            filter_=flt, order_by=cloud_logging.ASCENDING,
                                            page_size=page_size, max_results=page_size))

        try:
            raw = await self.google.call(read)
        except Exception as exc:
            error = provider_error(exc, "reading Cloud Logging entries")
            if isinstance(error, RetryableProviderError) and error.throttled:
                budget.on_throttle()
                return LogBatch([], cursor)
            raise error from exc
        budget.on_success()
        batch = next_batch(entries_of(raw), parsed)
        return batch if batch.cursor is not None else LogBatch(batch.lines, cursor)

    # ------------------------------------------------------------------ events

    def parse_events(self, headers: Mapping[str, str], body: bytes, *,
                     shared_secret: str | None) -> EventDelivery:
        """Pub/Sub push and Eventarc deliveries (see ``events``)."""
        return parse_delivery(headers, body, shared_secret=shared_secret,
                              verifier=self._verifier)

    def parse_trusted_event(self, event: Mapping[str, Any]) -> EventDelivery:
        """The ``data`` of a CloudEvent Eventarc handed to a function: Google delivered it,
        so no token is checked."""
        return parse_event(event)

    # ------------------------------------------------------------------ provisioning

    async def provision(self, pool_name: str, options: Mapping[str, Any], apply: bool = False,
                        *, on_step: Callable[[ProvisionStep], None] | None = None
                        ) -> ProvisionPlan:
        """See ``provision.provision``."""
        from providers.cloud_run.provision import provision

        return await provision(self.google, pool_name, options, apply, on_step=on_step)

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool = False, *,
                          on_step: Callable[[ProvisionStep], None] | None = None
                          ) -> ProvisionPlan:
        """See ``provision.deprovision``."""
        from providers.cloud_run.provision import deprovision

        return await deprovision(self.google, pool_name, provisioned, apply, on_step=on_step)

    async def close(self) -> None:
        self.google.close()


def _created(execution: Mapping[str, Any]) -> float:
    """createTime in seconds (to the second: that is all the search window needs)."""
    stamp = str(execution.get("createTime") or "")[:19]
    try:
        return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()  # unreadable: treat it as recent, so the search goes on


def _http_error(response: Any) -> Exception:
    """A REST answer >= 400 made outside the SDK, as google.api_core's exception for it
    (so it maps like every other call's)."""
    from google.api_core import exceptions as gexc

    try:
        payload = response.json()
    except ValueError:
        payload = {}
    error: Exception = gexc.format_http_response_error(response, response.request.method,
                                                       response.url, payload)
    return error


def concurrent_timeout() -> type[BaseException]:
    import concurrent.futures

    return concurrent.futures.TimeoutError


def _adc_project() -> str | None:
    """The project Application Default Credentials carry (blocking: run in the pool)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError:
        return None
    return str(project) if project else None


PROVIDER = CloudRunProvider()
