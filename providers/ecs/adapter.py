"""The ecs:push adapter: runs on AWS ECS Fargate, one task per run, no worker in between.

``PROVIDER`` is what the registry loads for pool type ``ecs:push``. Submitting finds or
registers the task definition for the run's content (``taskdef``), then calls RunTask
with a clientToken derived from the run and attempt, through a per-region adaptive token
bucket (``providers.ratelimit``). The ``InfraRef`` it returns carries the region, cluster,
endpoint and identity references, so every later call reaches the task from any process.
Status is DescribeTasks in batches of 100 per cluster; EventBridge task-state events map
to the same statuses (``events``). Provisioning lives in ``provision``.

Settings come from ``PUSHPOOL_ECS_*`` environment variables (see ``EcsSettings``);
this module may import boto3, and the registry imports it only when an ECS pool is used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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
from providers.ecs.aws import (
    AwsClients,
    Connection,
    code_of,
    message_of,
    retrying,
    tag_list,
)
from providers.ecs.config import (
    DEFAULT_CONTAINER_NAME,
    EcsConfig,
    aws_units,
    fargate_size,
    parse_config,
    raw_image,
)
from providers.ecs.config import default_base_job_template as _default_template
from providers.ecs.config import validate_config as _validate_config
from providers.ecs.deprovision import deprovision as _deprovision
from providers.ecs.events import (
    STARTED_BY_PREFIX,
    cluster_name,
    console_url,
    make_infra_id,
    missing_status,
    parse_delivery,
    parse_event,
    parse_infra_id,
    task_id,
    task_status,
)
from providers.ecs.logs import LogReader
from providers.ecs.network import NetworkDefaults
from providers.ecs.provision import PROVISION_OPTIONS
from providers.ecs.provision import provision as _provision
from providers.ecs.taskdef import (
    AUTO_DEREGISTER_TAG,
    TaskDefinitions,
    build_task_definition,
    clean_tags,
    merge_raw,
    tag_value,
)
from providers.env_settings import values_from_env
from providers.provision_options import ProvisionOption
from providers.ratelimit import AdaptiveTokenBucket

__all__ = ["PROVIDER", "EcsProvider", "EcsSettings", "client_token", "started_by_for"]

MAX_OVERRIDES_CHARS = 8192  # RunTask's limit on the overrides structure
DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks
SEEN_TASKS = 20000  # task views kept for logs()
CANCEL_REASON = "Cancelled by pushpool"
DEREGISTERS = "deregisters_definition"  # InfraRef.connection: cleanup() may deregister
_STARTED_BY_UNSAFE = re.compile(r"[^A-Za-z0-9_/-]")


@dataclass(frozen=True)
class EcsSettings:
    """Tunables, read from ``PUSHPOOL_ECS_<FIELD>`` (e.g. PUSHPOOL_ECS_RUN_TASK_RATE=10)."""

    run_task_rate: float = 20.0  # RunTask calls per second per account+region (Fargate: 20)
    run_task_burst: float = 100.0  # bucket size (Fargate launch burst: 100)
    run_task_min_rate: float = 1.0  # throttling never slows RunTask below this
    max_workers: int = 32  # threads for boto3 calls
    submit_attempts: int = 3  # RunTask tries inside one submit() before RetryableProviderError
    backoff_base: float = 0.25
    backoff_cap: float = 4.0
    register_attempts: int = 6  # RegisterTaskDefinition tries (throttled per family)
    find_existing: str = "retries"  # look for the run's task before RunTask: retries|always
    missing_grace_seconds: float = 60.0  # MISSING right after RunTask is ECS's lag, not a crash
    log_page_size: int = 10000
    # GetLogEvents has a low account-wide quota; reads beyond this budget are skipped
    # (no lines, same cursor) and happen on a later poll.
    log_read_rate: float = 10.0
    log_read_burst: float = 20.0
    # A log stream not there yet is looked for again after this, doubling up to the cap.
    log_missing_backoff: float = 2.0
    log_missing_backoff_cap: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EcsSettings:
        settings = cls(**values_from_env(cls, "PUSHPOOL_ECS_", environ))
        if settings.find_existing not in ("retries", "always"):
            raise ValueError("PUSHPOOL_ECS_FIND_EXISTING: use 'retries' or 'always'")
        return settings


def client_token(run_id: str, attempt: int) -> str:
    """RunTask's idempotency token for one attempt of one run (≤ 64 printable ASCII)."""
    token = f"pushpool-{run_id}-{attempt}"
    if len(token) <= 64 and all(33 <= ord(c) <= 126 for c in token):
        return token
    digest = hashlib.sha256(f"{run_id}:{attempt}".encode()).hexdigest()[:40]
    return f"pushpool-{digest}-{attempt}"[:64]


def started_by_for(run_id: str) -> str:
    """``startedBy`` naming the run (≤ 128 of letters, digits, '-', '_', '/')."""
    safe = _STARTED_BY_UNSAFE.sub("-", run_id)
    if safe != run_id or len(safe) > 100:
        safe = f"{safe[:100]}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"
    return f"{STARTED_BY_PREFIX}{safe}"


def _connection(cfg: EcsConfig) -> Connection:
    creds = cfg.credentials
    return Connection(region=cfg.region, endpoint_url=cfg.endpoint_url,
                      profile=creds.profile if creds else None,
                      role_arn=creds.role_arn if creds else None,
                      external_id=creds.external_id if creds else None,
                      session_name=creds.session_name if creds else None)


def connection_facts(conn: Connection, cluster: str) -> dict[str, Any]:
    """What an ``InfraRef`` carries to reach the task again: region, endpoint and identity
    references (a profile, a role), never credentials themselves."""
    facts: dict[str, Any] = {k: v for k, v in dataclasses.asdict(conn).items() if v}
    facts["cluster"] = cluster
    return facts


def connection_of(ref: InfraRef) -> tuple[Connection, str, str, str]:
    """(connection, region, cluster, task ARN) of a reference made by ``submit``."""
    region, cluster, arn = parse_infra_id(ref.infra_id)
    facts = ref.connection or {}
    fields = {f.name: facts.get(f.name) for f in dataclasses.fields(Connection)}
    fields["region"] = fields["region"] or region
    return Connection(**fields), region, cluster, arn


def _cluster_ref(task_arn: str, cluster: str) -> str:
    """The cluster ARN from the task's ARN (same partition/account), else the name."""
    parts = task_arn.split(":")
    if len(parts) >= 6 and parts[0] == "arn":
        return f"arn:{parts[1]}:ecs:{parts[3]}:{parts[4]}:cluster/{cluster_name(cluster)}"
    return cluster


class EcsProvider:
    """AWS ECS Fargate push pools (``ecs:push``)."""

    pool_type: ClassVar[str] = "ecs:push"
    config_model: ClassVar[type[ProviderConfig]] = EcsConfig
    # What ``provision`` takes (``work-pool create --provision-infra --infra-option``).
    provision_options: ClassVar[tuple[ProvisionOption, ...]] = PROVISION_OPTIONS
    # Fargate takes tens of seconds to start a task and DescribeTasks is batched; with
    # EventBridge events feeding the API, polling is only the fallback.
    poll_interval: ClassVar[float] = float(os.environ.get("PUSHPOOL_ECS_POLL_INTERVAL") or 5.0)

    def __init__(self, settings: EcsSettings | None = None):
        self.settings = settings or EcsSettings.from_env()
        self.aws = AwsClients(max_workers=self.settings.max_workers)
        self.task_definitions = TaskDefinitions(
            self.aws, register_attempts=self.settings.register_attempts,
            backoff_base=self.settings.backoff_base * 2, backoff_cap=self.settings.backoff_cap)
        self._buckets: dict[Connection, AdaptiveTokenBucket] = {}
        self.network = NetworkDefaults(self.aws)
        self.log_reader = LogReader(self.aws,
                                    missing_backoff=self.settings.log_missing_backoff,
                                    missing_backoff_cap=self.settings.log_missing_backoff_cap)
        self._containers: dict[str, str] = {}  # task definition ARN -> first container
        # The last DescribeTasks/RunTask view of each task, so a first logs() call
        # right after a status poll needs no DescribeTasks of its own.
        self._seen: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._log_buckets: dict[Connection, AdaptiveTokenBucket] = {}
        self._arns_in_use: Counter[str] = Counter()

    # ------------------------------------------------------------------ configuration

    def default_base_job_template(self) -> dict[str, Any]:
        return _default_template()

    def validate_config(self, config: Mapping[str, Any]) -> None:
        _validate_config(config)

    def rate_limiter(self, region: str, config: Mapping[str, Any] | None = None
                     ) -> AdaptiveTokenBucket:
        """The RunTask token bucket of a region (for inspection and tests)."""
        conn = _connection(parse_config(config or {}))
        return self._bucket(dataclasses.replace(conn, region=region))

    def _bucket(self, conn: Connection) -> AdaptiveTokenBucket:
        bucket = self._buckets.get(conn)
        if bucket is None:
            bucket = AdaptiveTokenBucket(self.settings.run_task_rate,
                                         self.settings.run_task_burst,
                                         min_rate=self.settings.run_task_min_rate)
            self._buckets[conn] = bucket
        return bucket

    @staticmethod
    def _config(config: Mapping[str, Any]) -> EcsConfig:
        try:
            return parse_config(config)
        except ValueError as exc:
            raise PermanentProviderError(f"invalid ecs:push job configuration: {exc}") from None

    # ------------------------------------------------------------------ submit

    async def submit(self, spec: JobSpec) -> InfraRef:
        cfg = self._config(spec.config)
        conn = await self.aws.resolve(_connection(cfg))
        cluster = cfg.cluster or "default"
        started_by = started_by_for(spec.run_id)
        # Only then can cleanup() deregister anything, so only then does it look.
        deregisters = cfg.auto_deregister_task_definition and not cfg.task_definition_arn
        if spec.retried or spec.attempt > 1 or self.settings.find_existing == "always":
            # A crash can fall between RunTask and recording its answer; a retry must
            # adopt that task, not start a second one.
            found = await self._find_existing(conn, cluster, started_by)
            if found is not None:
                return self._ref(conn, found, deregisters)
        request = await self._run_task_request(spec, cfg, conn, cluster, started_by)
        arn = str(request["taskDefinition"])
        self._arns_in_use[arn] += 1
        try:
            task = await self._run_task(conn, request, cluster, started_by, spec.attempt)
        except PermanentProviderError as exc:
            if cfg.task_definition_arn or "inactive" not in message_of(exc).lower():
                raise
            # Another replica deregistered it after we cached it: register again, once.
            self.task_definitions.forget(arn)
            request = await self._run_task_request(spec, cfg, conn, cluster, started_by)
            task = await self._run_task(conn, request, cluster, started_by, spec.attempt)
        finally:
            self._arns_in_use[arn] -= 1
            if self._arns_in_use[arn] <= 0:
                del self._arns_in_use[arn]
        self._saw(task)
        return self._ref(conn, task, deregisters)

    @staticmethod
    def _ref(conn: Connection, task: Mapping[str, Any], deregisters: bool) -> InfraRef:
        region = str(conn.region)
        arn, cluster = str(task["taskArn"]), str(task["clusterArn"])
        # The wall-clock time of RunTask tells any later reader that a MISSING task is
        # ECS's read lag rather than a crash, whichever process reads it.
        facts = {**connection_facts(conn, cluster), "submitted_at": time.time(),
                 DEREGISTERS: deregisters}
        return InfraRef(make_infra_id(region, cluster, arn), facts,
                        console_url(region, cluster, arn))

    async def _run_task_request(self, spec: JobSpec, cfg: EcsConfig, conn: Connection,
                                cluster: str, started_by: str) -> dict[str, Any]:
        region = str(conn.region)
        raw = cfg.task_definition
        overrides: dict[str, Any] = {}
        try:
            cpu_wanted = (aws_units(spec.cpu, "cpu") or cfg.cpu
                          or aws_units(raw.get("cpu"), "cpu"))
            memory_wanted = (aws_units(spec.memory, "memory") or cfg.memory
                             or aws_units(raw.get("memory"), "memory"))
            if cfg.task_definition_arn:
                if spec.image or cfg.image:
                    raise ValueError(
                        "image: cannot be combined with task_definition_arn (ECS cannot "
                        "override an existing task definition's image); remove one of them")
                definition_arn = cfg.task_definition_arn
                container = cfg.container_name or await self._first_container(
                    conn, definition_arn)
                if cpu_wanted or memory_wanted:
                    cpu, memory = fargate_size(cpu_wanted, memory_wanted)
                    overrides.update(cpu=str(cpu), memory=str(memory))
            else:
                image = spec.image or cfg.image or raw_image(raw, cfg.container_name)
                if not image:
                    raise ValueError("image: no container image is set; set image in the "
                                     "deployment or task_definition_arn in the pool")
                cpu, memory = fargate_size(cpu_wanted, memory_wanted)
                body = build_task_definition(cfg, image=image, cpu=cpu, memory=memory,
                                             region=region, pool_name=spec.pool_name)
                container = cfg.container_name or DEFAULT_CONTAINER_NAME
                definition_arn = await self.task_definitions.ensure(conn, body)
                self.log_reader.learn(definition_arn, body, region)
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from None

        container_override: dict[str, Any] = {"name": container}
        command = spec.command or cfg.command
        if command:
            container_override["command"] = list(command)
        env = {**cfg.env, **spec.env}
        environment = [{"name": k, "value": v} for k, v in env.items() if v is not None]
        if environment:
            container_override["environment"] = environment
        overrides["containerOverrides"] = [container_override]
        if cfg.task_role_arn:
            overrides["taskRoleArn"] = cfg.task_role_arn
        size = len(json.dumps(overrides))
        if size > MAX_OVERRIDES_CHARS:
            raise PermanentProviderError(
                f"env/command: the RunTask overrides are {size} characters and ECS allows "
                f"{MAX_OVERRIDES_CHARS}; move large values into the task definition "
                "(task_definition.containerDefinitions[].environment) or secrets")

        tags = clean_tags(
            {"pushpool:run-id": spec.run_id, "pushpool:pool": spec.pool_name,
             "pushpool:attempt": str(spec.attempt)},
            {"pushpool:deployment-id": spec.deployment_id} if spec.deployment_id else {},
            cfg.labels, spec.labels, cfg.tags)
        request: dict[str, Any] = {
            "cluster": cluster,
            "taskDefinition": definition_arn,
            "count": 1,
            "startedBy": started_by,
            "clientToken": client_token(spec.run_id, spec.attempt),
            "networkConfiguration": await self.network.awsvpc(conn, cfg),
            "overrides": overrides,
            "tags": tag_list(tags),
        }
        if cfg.capacity_provider_strategy:
            request["capacityProviderStrategy"] = [
                item.model_dump() for item in cfg.capacity_provider_strategy]
        elif cfg.launch_type == "FARGATE_SPOT":
            request["capacityProviderStrategy"] = [{"capacityProvider": "FARGATE_SPOT",
                                                    "weight": 1}]
        else:
            request["launchType"] = "FARGATE"
        if cfg.platform_version:
            request["platformVersion"] = cfg.platform_version
        return merge_raw(request, cfg.task_run_request)

    async def _run_task(self, conn: Connection, request: dict[str, Any], cluster: str,
                        started_by: str, attempt: int) -> Mapping[str, Any]:
        bucket = self._bucket(conn)

        async def once() -> Mapping[str, Any]:
            await bucket.acquire()
            answer = await self.aws.call(conn, "ecs", "run_task", **request)
            bucket.on_success()
            tasks = answer.get("tasks") or []
            if tasks:
                return tasks[0]
            raise _failures_error(answer.get("failures") or [])

        try:
            return await retrying(once, attempts=self.settings.submit_attempts,
                                  base=self.settings.backoff_base,
                                  cap=self.settings.backoff_cap, on_throttle=bucket.on_throttle)
        except PermanentProviderError as exc:
            if code_of(exc) != "ConflictException":
                raise
            # Same clientToken, other parameters (say the run's env was rendered again
            # after a lost answer): this attempt already has its task, live or finished.
            found = await self._find_existing(conn, cluster, started_by, attempt=attempt)
            if found is None:
                raise PermanentProviderError(
                    f"{exc}; no task of this attempt was found, so the run was not started "
                    "again with the new parameters") from exc
            return found

    async def _find_existing(self, conn: Connection, cluster: str, started_by: str, *,
                             attempt: int | None = None) -> Mapping[str, Any] | None:
        """A task this run already started: any live one, or (given ``attempt``) the one
        of that attempt, live or stopped."""
        arns: list[str] = []
        for desired in ("RUNNING",) if attempt is None else ("RUNNING", "STOPPED"):
            answer = await self.aws.call(conn, "ecs", "list_tasks", cluster=cluster,
                                         startedBy=started_by, desiredStatus=desired)
            arns += [a for a in answer.get("taskArns") or [] if a not in arns]
        if not arns:
            return None
        described = await self.aws.call(conn, "ecs", "describe_tasks", cluster=cluster,
                                        tasks=arns[:DESCRIBE_BATCH], include=["TAGS"])
        tasks = described.get("tasks") or []
        if attempt is not None:
            tasks = [t for t in tasks
                     if tag_value(t.get("tags"), "pushpool:attempt") == str(attempt)]
        else:
            tasks = [t for t in tasks if t.get("lastStatus") != "STOPPED"]
        tasks.sort(key=lambda t: t.get("lastStatus") == "STOPPED")  # live ones first
        return tasks[0] if tasks else None

    async def _first_container(self, conn: Connection, definition_arn: str) -> str:
        name = self._containers.get(definition_arn)
        if name is None:
            answer = await self.aws.call(conn, "ecs", "describe_task_definition",
                                         taskDefinition=definition_arn)
            containers = answer["taskDefinition"].get("containerDefinitions") or []
            essential = [c for c in containers if c.get("essential", True)] or containers
            if not essential:
                raise PermanentProviderError(
                    f"task_definition_arn: {definition_arn} has no containers")
            name = str(essential[0]["name"])
            self._containers[definition_arn] = name
        return name

    def _saw(self, task: Mapping[str, Any]) -> None:
        arn = str(task.get("taskArn") or "")
        self._seen[arn] = task
        self._seen.move_to_end(arn)
        while len(self._seen) > SEEN_TASKS:
            self._seen.popitem(last=False)

    # ------------------------------------------------------------------ status

    async def status(self, ref: InfraRef) -> InfraStatus:
        answer = await self.status_many([ref])
        if ref.infra_id not in answer:
            raise RetryableProviderError(f"no status for {ref.infra_id} yet; try again")
        return answer[ref.infra_id]

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        """Statuses by DescribeTasks, ≤ 100 tasks per call, calls per cluster in parallel.

        Ids whose cluster could not be read for a transient reason are left out (ask
        again later); if every call failed that way the error is raised.
        """
        result: dict[str, InfraStatus] = {}
        groups: dict[tuple[Connection, str], list[tuple[InfraRef, str]]] = {}
        for ref in refs:
            try:
                conn, _, cluster, arn = connection_of(ref)
            except PermanentProviderError as exc:
                result[ref.infra_id] = InfraStatus(InfraPhase.CRASHED, None, str(exc))
                continue
            groups.setdefault((conn, _cluster_ref(arn, cluster)), []).append((ref, arn))
        calls = []
        for (conn, cluster_ref), members in groups.items():
            for start in range(0, len(members), DESCRIBE_BATCH):
                calls.append(self._describe_batch(conn, cluster_ref,
                                                  members[start:start + DESCRIBE_BATCH]))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        transient: list[BaseException] = []
        for outcome in outcomes:
            if isinstance(outcome, RetryableProviderError):
                transient.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                result.update(outcome)
        if transient and len(transient) == len(outcomes):
            raise transient[0]
        return result

    async def _describe_batch(self, conn: Connection, cluster: str,
                              members: list[tuple[InfraRef, str]]) -> dict[str, InfraStatus]:
        try:
            answer = await self.aws.call(conn, "ecs", "describe_tasks", cluster=cluster,
                                         tasks=[arn for _, arn in members])
        except PermanentProviderError as exc:
            if code_of(exc) != "ClusterNotFoundException":
                raise
            return {ref.infra_id: InfraStatus(InfraPhase.CRASHED, None, str(exc))
                    for ref, _ in members}
        by_arn = {t["taskArn"]: t for t in answer.get("tasks") or []}
        by_id = {task_id(a): t for a, t in by_arn.items()}
        failures = {f.get("arn"): f for f in answer.get("failures") or []}
        now = time.time()
        out: dict[str, InfraStatus] = {}
        for ref, arn in members:
            task = by_arn.get(arn) or by_id.get(task_id(arn))
            if task is not None:
                self._saw(task)
                out[ref.infra_id] = task_status(task)
                continue
            submitted = ref.connection.get("submitted_at") if ref.connection else None
            if isinstance(submitted, int | float) and \
                    now - submitted < self.settings.missing_grace_seconds:
                out[ref.infra_id] = InfraStatus(InfraPhase.PENDING)  # ECS reads lag RunTask
                continue
            failure = failures.get(arn) or {}
            out[ref.infra_id] = missing_status(failure.get("reason"))
        return out

    # ------------------------------------------------------------------ cancel / cleanup

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        """StopTask. ECS sends SIGTERM, then SIGKILL after the container's stopTimeout
        (so ``grace_seconds`` is set in the task definition, not here)."""
        conn, _, cluster, arn = connection_of(ref)
        try:
            await self.aws.call(conn, "ecs", "stop_task", cluster=_cluster_ref(arn, cluster),
                                task=arn, reason=CANCEL_REASON)
        except PermanentProviderError as exc:
            if _is_gone(exc):
                return  # already gone: nothing to stop
            raise

    async def cleanup(self, ref: InfraRef) -> None:
        """Deregister the run's task definition if it is marked for it and no task of
        its family still runs in the cluster. A run of a pool that does not deregister
        costs no call (references from before ``DEREGISTERS`` look, as they did)."""
        if (ref.connection or {}).get(DEREGISTERS) is False:
            return
        conn, _, cluster, arn = connection_of(ref)
        cluster_ref = _cluster_ref(arn, cluster)
        task = await self._describe_one(conn, cluster_ref, arn)
        if task is None:
            return
        definition_arn = str(task.get("taskDefinitionArn") or "")
        if not definition_arn or self._arns_in_use.get(definition_arn):
            return
        answer = await self.aws.call(conn, "ecs", "describe_task_definition",
                                     taskDefinition=definition_arn, include=["TAGS"])
        definition = answer.get("taskDefinition") or {}
        if definition.get("status") != "ACTIVE":
            return
        if tag_value(answer.get("tags"), AUTO_DEREGISTER_TAG) != "true":
            return
        running = await self.aws.call(conn, "ecs", "list_tasks", cluster=cluster_ref,
                                      family=definition["family"], desiredStatus="RUNNING")
        others = [a for a in running.get("taskArns") or [] if a != arn]
        if others:
            described = await self.aws.call(conn, "ecs", "describe_tasks",
                                            cluster=cluster_ref, tasks=others[:DESCRIBE_BATCH])
            if any(t.get("lastStatus") != "STOPPED" for t in described.get("tasks") or []):
                return
        await self.aws.call(conn, "ecs", "deregister_task_definition",
                            taskDefinition=definition_arn)
        self.task_definitions.forget(definition_arn)

    async def _describe_one(self, conn: Connection, cluster: str,
                            arn: str) -> Mapping[str, Any] | None:
        try:
            answer = await self.aws.call(conn, "ecs", "describe_tasks", cluster=cluster,
                                         tasks=[arn])
        except PermanentProviderError as exc:
            if _is_gone(exc):
                return None
            raise
        tasks = answer.get("tasks") or []
        return tasks[0] if tasks else None

    # ------------------------------------------------------------------ logs

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        """One page of the task's CloudWatch log stream after ``cursor`` (see ``logs``);
        at most one GetLogEvents per call, ``log_page_size`` lines at most."""
        conn, _, cluster, arn = connection_of(ref)
        budget = self._log_buckets.get(conn)
        if budget is None:
            budget = AdaptiveTokenBucket(self.settings.log_read_rate,
                                         self.settings.log_read_burst, min_rate=0.5)
            self._log_buckets[conn] = budget

        spent = False

        def spend() -> bool:
            nonlocal spent
            spent = budget.try_acquire()
            return spent

        async def describe() -> Mapping[str, Any] | None:
            return await self._describe_one(conn, _cluster_ref(arn, cluster), arn)

        try:
            batch = await self.log_reader.read(
                conn, arn, cursor, seen=self._seen.get(arn), describe_task=describe,
                may_call=spend, page_size=self.settings.log_page_size)
        except RetryableProviderError as exc:
            if not exc.throttled:
                raise
            budget.on_throttle()
            return LogBatch([], cursor)
        if spent:
            budget.on_success()
        return batch

    # ------------------------------------------------------------------ events

    def parse_events(self, headers: Mapping[str, str], body: bytes, *,
                     shared_secret: str | None) -> EventDelivery:
        """EventBridge "ECS Task State Change" events, as an API destination delivers
        them, authenticated by the shared secret header (see ``events``)."""
        return parse_delivery(headers, body, shared_secret=shared_secret)

    def parse_trusted_event(self, event: Mapping[str, Any]) -> EventDelivery:
        """An event EventBridge handed to a Lambda function itself: AWS authenticated it."""
        return parse_event(event)

    # ------------------------------------------------------------------ provisioning

    async def provision(self, pool_name: str, options: Mapping[str, Any], apply: bool = False,
                        *, on_step: Callable[[ProvisionStep], None] | None = None
                        ) -> ProvisionPlan:
        """See ``provision.provision``."""
        return await _provision(self.aws, pool_name, options, apply,
                                             on_step=on_step)

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool = False, *,
                          on_step: Callable[[ProvisionStep], None] | None = None
                          ) -> ProvisionPlan:
        """See ``deprovision.deprovision``."""
        return await _deprovision(self.aws, pool_name, provisioned, apply,
                                               on_step=on_step)

    async def close(self) -> None:
        self.aws.close()


def _failures_error(failures: list[Mapping[str, Any]]) -> Exception:
    """RunTask's ``failures``: capacity shortages are retryable, the rest are not."""
    if not failures:
        return RetryableProviderError("ECS RunTask failed: no task and no failure reason")
    failure = failures[0]
    reason = str(failure.get("reason") or "")
    detail = str(failure.get("detail") or "")
    text = f"ECS RunTask failed: {reason}" + (f": {detail}" if detail else "")
    if failure.get("arn"):
        text += f" ({failure['arn']})"
    transient = (reason.startswith("RESOURCE") or reason == "AGENT"
                 or "capacity" in (reason + detail).lower())
    return RetryableProviderError(text) if transient else PermanentProviderError(text)


def _is_gone(exc: BaseException) -> bool:
    code, message = code_of(exc), message_of(exc).lower()
    return (code == "ClusterNotFoundException"
            or (code == "InvalidParameterException" and "not found" in message))


PROVIDER = EcsProvider()
