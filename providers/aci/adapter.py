"""The azure-container-instance:push adapter: one container group per run attempt.

``submit`` PUTs a group named from the run and attempt (``body.group_name``); a retried
submit first GETs it, to adopt one an earlier, interrupted try made. Creates go through
the subscription's create budget (``ratelimit``). The returned ``InfraRef`` carries the
``arm.Connection`` (subscription, resource group, endpoint, cloud, identity), so any
process can follow the run. ``status_many`` reads one list per resource group per pass
and GETs only the groups the list cannot settle (running or finished ones; lists carry no
instance view), within a read budget; a group this process last saw pending that the
list shows provisioned has started, and is RUNNING without a GET until the next pass
reads it in full. ``status`` maps Azure's states as documented in
``status``. Cancel stops the group (a group still provisioning is deleted instead);
cleanup deletes it once the run is final unless ``keep_container_group``. Deletes go
through the subscription's delete budget as creates go through its create budget, and a
429 pauses either until its Retry-After. Logs: ``containers.list_logs`` with timestamps
(``logs``). Event Grid deliveries: ``events``. Provisioning: ``provision``.

Settings come from ``PUSHPOOL_ACI_*`` environment variables (``AciSettings``). The SDK
is imported on first use (``arm``), never by importing this package.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from providers.aci.arm import (
    CLOUDS,
    ArmClients,
    Connection,
    arm_json,
    connection_from_config,
    is_not_found,
    list_json,
    provider_error,
    with_retries,
)
from providers.aci.body import ATTEMPT_TAG, RUN_TAG, build_group, group_name
from providers.aci.config import (
    DEFAULT_CONTAINER_NAME,
    AciConfig,
    normal_location,
)
from providers.aci.config import default_base_job_template as _default_template
from providers.aci.config import validate_config as _validate_config
from providers.aci.events import infra_id_for, parse_delivery
from providers.aci.logs import new_lines
from providers.aci.provision import PROVISION_OPTIONS
from providers.aci.ratelimit import WindowBudget
from providers.aci.status import group_status, has_started, missing_status, needs_detail
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
from providers.env_settings import values_from_env
from providers.provision_options import ProvisionOption
from providers.ratelimit import AdaptiveTokenBucket

__all__ = ["PROVIDER", "AciProvider", "AciSettings", "Target"]

T = TypeVar("T")
HINTS_KEPT = 20000


@dataclass(frozen=True)
class AciSettings:
    """Tunables, read from ``PUSHPOOL_ACI_<FIELD>`` (e.g. PUSHPOOL_ACI_CREATES_PER_HOUR)."""

    creates_per_5min: int = 100  # ACI's default create limit per subscription
    creates_per_hour: int = 300
    max_create_wait: float = 5.0  # longer waits are refused (RetryableProviderError)
    deletes_per_5min: int = 100  # ACI's default delete limit per subscription
    deletes_per_hour: int = 300
    max_delete_wait: float = 5.0  # for cancel's delete; longer waits are refused
    cleanup_wait: float = 300.0  # cleanup (which nothing retries) waits this long at most
    cleanup_attempts: int = 3  # deletes a cleanup tries when Azure answers 429
    read_rate: float = 20.0  # ARM reads per second per subscription (ARM refills 25/s)
    read_burst: float = 200.0
    log_read_rate: float = 10.0  # list_logs calls per second per subscription
    log_read_burst: float = 50.0
    lro_polling_interval: float = 2.0  # seconds between long-running-operation polls
    read_attempts: int = 3  # a read's tries on 5xx/timeouts before giving up this pass
    backoff_base: float = 0.2
    backoff_cap: float = 2.0
    list_threshold: int = 2  # runs in one resource group from which a list beats GETs
    pending_detail_after: float = 20.0  # a group pending longer is also read in full
    missing_grace_seconds: float = 30.0  # absent right after the PUT: ARM's read lag
    max_concurrent_reads: int = 16
    delete_wait_seconds: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AciSettings:
        settings = cls(**values_from_env(cls, "PUSHPOOL_ACI_", environ))
        if settings.lro_polling_interval <= 0:
            # 0 is falsy to azure-core, which then waits its 30 s default.
            raise ValueError("PUSHPOOL_ACI_LRO_POLLING_INTERVAL: must be > 0")
        return settings


@dataclass(frozen=True)
class Target:
    """What a reference points at: connection, group, container, submit facts."""

    conn: Connection
    group: str
    container: str
    submitted_at: float | None
    start_timeout: float | None
    keep: bool

    @classmethod
    def of(cls, ref: InfraRef) -> Target:
        facts = ref.connection or {}
        group = facts.get("group")
        if not isinstance(group, str) or not group:
            raise PermanentProviderError(f"not an ACI reference: {ref.infra_id!r} has no "
                                         "container group in its connection")
        submitted = facts.get("submitted_at")
        timeout = facts.get("start_timeout")
        return cls(Connection.from_facts(facts), group,
                   str(facts.get("container") or DEFAULT_CONTAINER_NAME),
                   float(submitted) if isinstance(submitted, int | float) else None,
                   float(timeout) if isinstance(timeout, int | float) else None,
                   bool(facts.get("keep")))

    def age(self) -> float | None:
        return None if self.submitted_at is None else time.time() - self.submitted_at


def resource_id(conn: Connection, group: str) -> str:
    return (f"/subscriptions/{conn.subscription_id}/resourceGroups/{conn.resource_group}"
            f"/providers/Microsoft.ContainerInstance/containerGroups/{group}")


def console_url(conn: Connection, group: str) -> str | None:
    cloud = CLOUDS.get(conn.cloud)
    if cloud is None or conn.endpoint != cloud.resource_manager:
        return None  # Azure Stack or an emulator: no public portal knows it
    return f"{cloud.portal}/#resource{resource_id(conn, group)}/overview"


class AciProvider:
    """Azure Container Instances push pools (``azure-container-instance:push``)."""

    pool_type: ClassVar[str] = "azure-container-instance:push"
    config_model: ClassVar[type[ProviderConfig]] = AciConfig
    # What ``provision`` takes (``work-pool create --provision-infra --infra-option``).
    provision_options: ClassVar[tuple[ProvisionOption, ...]] = PROVISION_OPTIONS
    # Groups take tens of seconds to start; reads are budgeted per subscription.
    poll_interval: ClassVar[float] = float(os.environ.get("PUSHPOOL_ACI_POLL_INTERVAL") or 10.0)

    def __init__(self, settings: AciSettings | None = None):
        self.settings = settings or AciSettings.from_env()
        self.arm = ArmClients(self.settings.lro_polling_interval)
        self._create_budgets: dict[str, WindowBudget] = {}
        self._delete_budgets: dict[str, WindowBudget] = {}
        self._read_budgets: dict[str, AdaptiveTokenBucket] = {}
        self._log_budgets: dict[str, AdaptiveTokenBucket] = {}
        self._locations: dict[tuple[str, str], str] = {}
        # Last phase and read time per infra id: hints only (fewer log reads while a
        # group is pending, stalest groups read first when the budget is short).
        self._hints: OrderedDict[str, tuple[InfraPhase, float]] = OrderedDict()

    # ------------------------------------------------------------------ configuration

    def default_base_job_template(self) -> dict[str, Any]:
        return _default_template()

    def validate_config(self, config: Mapping[str, Any]) -> None:
        _validate_config(config)

    def create_budget(self, subscription_id: str) -> WindowBudget:
        s = self.settings
        return self._window_budget(
            self._create_budgets, subscription_id, "container group creates",
            "create limit: PUSHPOOL_ACI_CREATES_PER_5MIN, PUSHPOOL_ACI_CREATES_PER_HOUR",
            [(s.creates_per_5min, 300.0), (s.creates_per_hour, 3600.0)], s.max_create_wait)

    def delete_budget(self, subscription_id: str) -> WindowBudget:
        s = self.settings
        return self._window_budget(
            self._delete_budgets, subscription_id, "container group deletes",
            "delete limit: PUSHPOOL_ACI_DELETES_PER_5MIN, PUSHPOOL_ACI_DELETES_PER_HOUR",
            [(s.deletes_per_5min, 300.0), (s.deletes_per_hour, 3600.0)], s.max_delete_wait)

    @staticmethod
    def _window_budget(store: dict[str, WindowBudget], subscription_id: str, what: str,
                       setting: str, windows: list[tuple[int, float]],
                       max_wait: float) -> WindowBudget:
        """The subscription's budget for one operation (ARM limits them per subscription)."""
        key = subscription_id.lower()
        budget = store.get(key)
        if budget is None:
            budget = store[key] = WindowBudget(what, setting, windows, max_wait=max_wait)
        return budget

    def _budget(self, store: dict[str, AdaptiveTokenBucket], conn: Connection, burst: float,
                rate: float) -> AdaptiveTokenBucket:
        key = conn.subscription_id.lower()
        bucket = store.get(key)
        if bucket is None:
            bucket = store[key] = AdaptiveTokenBucket(rate, burst)
        return bucket

    def read_budget(self, conn: Connection) -> AdaptiveTokenBucket:
        return self._budget(self._read_budgets, conn, self.settings.read_burst,
                            self.settings.read_rate)

    async def _read(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        s = self.settings
        return await with_retries(call, what, attempts=s.read_attempts, base=s.backoff_base,
                                  cap=s.backoff_cap)

    # ------------------------------------------------------------------ submit

    async def submit(self, spec: JobSpec) -> InfraRef:
        try:
            cfg = _validate_config(spec.config)
        except ValueError as exc:
            raise PermanentProviderError(
                f"invalid azure-container-instance job configuration: {exc}") from None
        image = spec.image or cfg.image
        if not image:
            raise PermanentProviderError("image: no container image is set; set image in the "
                                         "deployment or the pool")
        conn = connection_from_config(cfg)
        name = group_name(spec.run_id, spec.attempt)
        rg = conn.resource_group
        # Only a retried call can find its group made (the name is the run's and the
        # attempt's alone): the dispatcher's first call of a fresh claim PUTs at once.
        existing = await self._existing(conn, name) if spec.retried else None
        if existing is not None:
            tags = existing.get("tags") or {}
            if tags.get(RUN_TAG) != spec.run_id or tags.get(ATTEMPT_TAG) != str(spec.attempt):
                raise PermanentProviderError(
                    f"container group {name!r} already exists in resource group {rg!r} and "
                    "was not made for this run; delete it or use another resource group")
            return self._ref(conn, name, cfg)  # an earlier try made it: adopt it
        location = normal_location(cfg.location) if cfg.location else \
            await self._location(conn)
        try:
            body = build_group(spec, cfg, location=location, image=image)
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from None
        budget = self.create_budget(conn.subscription_id)
        await budget.acquire()
        payload = json.dumps(body).encode()
        try:
            # The PUT only: provisioning is followed by status reads, not by this LRO.
            await arm_json(self.arm.pipeline(conn), "PUT", resource_id(conn, name), payload)
        except Exception as exc:
            error = provider_error(exc, f"creating container group {name}")
            if isinstance(error, RetryableProviderError) and error.throttled:
                budget.on_throttle(error.retry_after)
            raise error from None
        self._hint(infra_id_for(resource_id(conn, name)), InfraPhase.PENDING)
        return self._ref(conn, name, cfg)

    async def _existing(self, conn: Connection, name: str) -> dict[str, Any] | None:
        pipeline = self.arm.pipeline(conn)

        async def get() -> Any:
            try:
                return await arm_json(pipeline, "GET", resource_id(conn, name))
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise
        found: dict[str, Any] | None = await self._read(get, f"reading container group {name}")
        return found

    async def _location(self, conn: Connection) -> str:
        key = (conn.subscription_id.lower(), conn.resource_group.lower())
        if key not in self._locations:
            def factory() -> Any:
                from azure.mgmt.resource.resources.aio import ResourceManagementClient

                from providers.aci.arm import client_kwargs

                return ResourceManagementClient(self.arm.credential(conn), conn.subscription_id,
                                                **client_kwargs(conn, self.arm.polling_interval))
            client = self.arm.other(conn, "resources", factory)
            group = await self._read(lambda: client.resource_groups.get(conn.resource_group),
                                     f"reading resource group {conn.resource_group}")
            self._locations[key] = normal_location(str(group.location))
        return self._locations[key]

    def _ref(self, conn: Connection, name: str, cfg: AciConfig) -> InfraRef:
        facts = {**conn.facts(), "group": name,
                 "container": cfg.container_name or DEFAULT_CONTAINER_NAME,
                 "submitted_at": time.time(), "start_timeout": cfg.start_timeout,
                 "keep": cfg.keep_container_group}
        return InfraRef(infra_id_for(resource_id(conn, name)), facts, console_url(conn, name))

    # ------------------------------------------------------------------ status

    async def status(self, ref: InfraRef) -> InfraStatus:
        answer = await self.status_many([ref])
        if ref.infra_id not in answer:
            raise RetryableProviderError(f"no status for {ref.infra_id} yet; try again")
        return answer[ref.infra_id]

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        """One list per resource group (GETs only for what a list cannot settle), the
        resource groups read in parallel. Ids that could not be read this time (a
        transient error, the read budget spent) are left out; if every read failed
        transiently, the error is raised."""
        result: dict[str, InfraStatus] = {}
        by_rg: dict[tuple[Any, ...], list[tuple[InfraRef, Target]]] = {}
        for ref in refs:
            try:
                target = Target.of(ref)
            except PermanentProviderError as exc:
                result[ref.infra_id] = InfraStatus(InfraPhase.CRASHED, None, str(exc))
                continue
            key = (*target.conn.client_key(), target.conn.resource_group.lower())
            by_rg.setdefault(key, []).append((ref, target))
        semaphore = asyncio.Semaphore(self.settings.max_concurrent_reads)
        outcomes = await asyncio.gather(
            *(self._read_group(members, semaphore) for members in by_rg.values()),
            return_exceptions=True)
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
        for infra_id, status in result.items():
            self._hint(infra_id, status.phase)
        return result

    async def _read_group(self, members: list[tuple[InfraRef, Target]],
                          semaphore: asyncio.Semaphore) -> dict[str, InfraStatus]:
        conn = members[0][1].conn
        budget = self.read_budget(conn)
        out: dict[str, InfraStatus] = {}
        to_get: list[tuple[InfraRef, Target]] = []
        if len(members) < self.settings.list_threshold:
            to_get = list(members)
        else:
            listed = await self._list(conn, budget)
            if listed is None:
                return out  # over the read budget: next pass
            for ref, target in members:
                entry = listed.get(target.group)
                if entry is None:
                    out[ref.infra_id] = self._absent(target)
                    continue
                age = target.age()
                pending_long = age is not None and age > min(
                    self.settings.pending_detail_after, target.start_timeout or age)
                if pending_long:
                    to_get.append((ref, target))
                elif not needs_detail(entry):
                    out[ref.infra_id] = group_status(entry, container_name=target.container)
                elif has_started(entry) and self._last_phase(ref.infra_id) is InfraPhase.PENDING:
                    # Pending when this process last read it, provisioned now: it has
                    # started, which is all a GET would add until the next pass reads
                    # it in full. At a mass start that is one GET a run saved.
                    out[ref.infra_id] = InfraStatus(InfraPhase.RUNNING)
                else:
                    to_get.append((ref, target))
        # When the budget is short, the groups read longest ago go first.
        to_get.sort(key=lambda m: self._hints.get(m[0].infra_id, (None, 0.0))[1])

        async def one(ref: InfraRef, target: Target) -> None:
            if not budget.try_acquire():
                return
            async with semaphore:
                status = await self._get_status(target)
            if status is not None:
                out[ref.infra_id] = status

        results = await asyncio.gather(*(one(r, t) for r, t in to_get), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        permanent = [e for e in errors if not isinstance(e, RetryableProviderError)]
        if permanent:
            raise permanent[0]
        if errors and not out:
            raise errors[0]
        return out

    async def _list(self, conn: Connection, budget: AdaptiveTokenBucket
                    ) -> dict[str, Mapping[str, Any]] | None:
        if not budget.try_acquire():
            return None
        pipeline = self.arm.pipeline(conn)
        path = resource_id(conn, "").rstrip("/")

        async def list_all() -> dict[str, Mapping[str, Any]]:
            found: dict[str, Mapping[str, Any]] = {}
            async for page in list_json(pipeline, path):
                for item in page:
                    name = item.get("name") or str(item.get("id", "")).rsplit("/", 1)[-1]
                    found[str(name)] = item
            return found

        try:
            return await self._read(list_all, f"listing container groups of resource group "
                                              f"{conn.resource_group}")
        except PermanentProviderError as exc:
            if "ResourceGroupNotFound" in str(exc):
                return {}
            raise

    async def _get_status(self, target: Target) -> InfraStatus | None:
        pipeline = self.arm.pipeline(target.conn)

        async def get() -> Any:
            try:
                return await arm_json(pipeline, "GET", resource_id(target.conn, target.group))
            except Exception as exc:
                if getattr(exc, "status_code", None) == 404:
                    return None
                raise
        group = await self._read(get, f"reading container group {target.group}")
        if group is None:
            return self._absent(target)
        return group_status(group, container_name=target.container, pending_for=target.age(),
                            start_timeout=target.start_timeout)

    def _absent(self, target: Target) -> InfraStatus:
        age = target.age()
        if age is not None and age < self.settings.missing_grace_seconds:
            return InfraStatus(InfraPhase.PENDING)  # ARM's reads may lag the PUT
        return missing_status()

    def _last_phase(self, infra_id: str) -> InfraPhase | None:
        hint = self._hints.get(infra_id)
        return hint[0] if hint else None

    def _hint(self, infra_id: str, phase: InfraPhase) -> None:
        self._hints[infra_id] = (phase, time.monotonic())
        self._hints.move_to_end(infra_id)
        while len(self._hints) > HINTS_KEPT:
            self._hints.popitem(last=False)

    # ------------------------------------------------------------------ cancel / cleanup

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        """Stop the group (ACI stops its containers at once: it has no grace period).
        A group still provisioning cannot be stopped, so it is deleted."""
        target = Target.of(ref)
        client = self.arm.aci(target.conn)
        rg, name = target.conn.resource_group, target.group
        try:
            await client.container_groups.stop(rg, name)
            return
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                return  # already gone: nothing to stop
            error = provider_error(exc, f"stopping container group {name}")
            if getattr(exc, "status_code", None) != 409:
                raise error from None
        await self._delete(target, wait=False)

    async def cleanup(self, ref: InfraRef) -> None:
        """Delete the group (a region holds 100 by default) unless keep_container_group.

        Nothing retries a cleanup, so this one waits for the delete budget (up to
        ``cleanup_wait``) and, after a 429, for its Retry-After, a few times."""
        target = Target.of(ref)
        if target.keep:
            return
        s = self.settings
        for attempt in range(1, s.cleanup_attempts + 1):
            try:
                await self._delete(target, wait=True, max_wait=s.cleanup_wait)
                return
            except RetryableProviderError as exc:
                wait = exc.retry_after or 0.0
                if not exc.throttled or attempt == s.cleanup_attempts or wait > s.cleanup_wait:
                    raise

    async def _delete(self, target: Target, *, wait: bool,
                      max_wait: float | None = None) -> None:
        """One paced delete; a 429 pauses the subscription's deletes for its Retry-After
        and is raised (throttled, with the wait) for the caller to retry."""
        client = self.arm.aci(target.conn)
        budget = self.delete_budget(target.conn.subscription_id)
        await budget.acquire(max_wait)
        try:
            poller = await client.container_groups.begin_delete(target.conn.resource_group,
                                                                target.group)
            if wait:
                await asyncio.wait_for(poller.result(), self.settings.delete_wait_seconds)
        except TimeoutError:
            return  # Azure goes on deleting; nothing more to do here
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                return
            error = provider_error(exc, f"deleting container group {target.group}")
            if isinstance(error, RetryableProviderError) and error.throttled:
                budget.on_throttle(error.retry_after)
            raise error from None

    # ------------------------------------------------------------------ logs

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        """New lines of the run's container since ``cursor`` (see ``logs``); no call while
        the group is known to be pending, none beyond the log-read budget."""
        target = Target.of(ref)
        hint = self._hints.get(ref.infra_id)
        if hint is not None and hint[0] is InfraPhase.PENDING:
            return LogBatch([], cursor)
        budget = self._budget(self._log_budgets, target.conn, self.settings.log_read_burst,
                              self.settings.log_read_rate)
        if not budget.try_acquire():
            return LogBatch([], cursor)
        client = self.arm.aci(target.conn)

        async def read() -> Any:
            try:
                return await client.containers.list_logs(
                    target.conn.resource_group, target.group, target.container, timestamps=True)
            except Exception as exc:
                if getattr(exc, "status_code", None) in (404, 400):
                    return None  # gone, or not started: no logs yet
                raise
        try:
            answer = await self._read(read, f"reading logs of container group {target.group}")
        except RetryableProviderError as exc:
            if exc.throttled:
                budget.drain()
                return LogBatch([], cursor)
            raise
        if answer is None:
            return LogBatch([], cursor)
        return new_lines(getattr(answer, "content", None), cursor)

    # ------------------------------------------------------------------ events

    def parse_events(self, headers: Mapping[str, str], body: bytes, *,
                     shared_secret: str | None) -> EventDelivery:
        """Event Grid: the validation handshake and ARM events (see ``events``)."""
        return parse_delivery(headers, body, shared_secret=shared_secret)

    # ------------------------------------------------------------------ provisioning

    async def provision(self, pool_name: str, options: Mapping[str, Any], apply: bool = False,
                        *, on_step: Callable[[ProvisionStep], None] | None = None
                        ) -> ProvisionPlan:
        """See ``provision.provision``."""
        from providers.aci.provision import provision

        return await provision(self.arm, pool_name, options, apply, on_step=on_step)

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool = False, *,
                          on_step: Callable[[ProvisionStep], None] | None = None
                          ) -> ProvisionPlan:
        """See ``provision.deprovision``."""
        from providers.aci.provision import deprovision

        return await deprovision(self.arm, pool_name, provisioned, apply, on_step=on_step)

    async def close(self) -> None:
        await self.arm.close()




PROVIDER = AciProvider()
