"""boto3 plumbing for the ECS adapter: connections, cached clients, a thread pool, errors.

boto3 is synchronous, so every call runs in one bounded thread pool and the event loop
never blocks. Clients are made once per (service, region, endpoint, identity) and reused
(they are thread safe; sessions are not, hence the lock). botocore's own retries are kept
small (none for ECS) because the adapter retries itself and feeds throttling into its
rate limiter; ``map_error`` turns every SDK failure into the two provider errors.
boto3 is imported on the first call, not with this module, so loading the adapter (the
registry, ``pushpool --help``, a cold start) costs nothing until an ECS pool is used.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from providers.base import PermanentProviderError, ProviderError, RetryableProviderError

if TYPE_CHECKING:
    import boto3
    import botocore.session

T = TypeVar("T")


@cache
def _loader() -> Any:
    """One model loader for every session: each new session would otherwise parse the
    services' JSON models again (~0.1 s per client)."""
    import botocore.loaders

    return botocore.loaders.create_loader()

THROTTLING_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException",
    "SlowDown", "ProvisionedThroughputExceededException", "LimitExceededException",
})
TRANSIENT_CODES = frozenset({
    "ServerException", "InternalFailure", "InternalError", "InternalServerError",
    "ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout",
    "RequestTimeoutException", "PriorRequestNotComplete",
})
# RegisterTaskDefinition's per-family throttle arrives as a plain ClientException.
_THROTTLE_MESSAGES = ("Too many concurrent attempts", "Rate exceeded")


@dataclass(frozen=True)
class Connection:
    """Where and as whom to call AWS. References only (profile, role); never secrets."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str | None = None


def _is_client_error(exc: BaseException) -> bool:
    # Without botocore loaded, nothing can be one of its errors (and no import is paid).
    exceptions = sys.modules.get("botocore.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.ClientError)


def error_code(exc: BaseException) -> str:
    if _is_client_error(exc):
        response: dict[str, Any] = getattr(exc, "response", {})
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    if _is_client_error(exc):
        response: dict[str, Any] = getattr(exc, "response", {})
        return str(response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def map_error(exc: BaseException, action: str) -> ProviderError:
    """An SDK failure as RetryableProviderError or PermanentProviderError, AWS's words kept."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
        ProfileNotFound,
        ReadTimeoutError,
    )

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientError):
        code, message = error_code(exc), error_message(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        text = f"{action} failed: {code or status}: {message}"
        if (code in THROTTLING_CODES or status == 429
                or any(m in message for m in _THROTTLE_MESSAGES)):
            return RetryableProviderError(text, throttled=True, retry_after=1.0)
        if status >= 500 or code in TRANSIENT_CODES:
            return RetryableProviderError(text)
        return PermanentProviderError(text)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                        ConnectionClosedError)):
        return RetryableProviderError(f"{action} failed: could not reach AWS: {exc}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return PermanentProviderError(
            f"{action} failed: no AWS credentials found; set credentials.profile or "
            "credentials.role_arn in the pool, or configure boto3's default chain")
    if isinstance(exc, ProfileNotFound):
        return PermanentProviderError(f"{action} failed: {exc}; fix credentials.profile")
    if isinstance(exc, NoRegionError):
        return PermanentProviderError(
            f"{action} failed: no AWS region; set region in the pool or AWS_DEFAULT_REGION")
    if isinstance(exc, ParamValidationError):
        return PermanentProviderError(f"{action} failed: AWS rejected the request: {exc}")
    if isinstance(exc, BotoCoreError):
        return RetryableProviderError(f"{action} failed: {exc}")
    return PermanentProviderError(f"{action} failed: {type(exc).__name__}: {exc}")


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff for the attempt-th retry (1-based)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


async def retrying(call: Callable[[], Awaitable[T]], *, attempts: int, base: float,
                   cap: float, on_throttle: Callable[[], None] | None = None,
                   retry_if: Callable[[RetryableProviderError], bool] | None = None) -> T:
    """Run ``call`` up to ``attempts`` times while it raises RetryableProviderError."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except RetryableProviderError as exc:
            if exc.throttled and on_throttle is not None:
                on_throttle()
            if attempt >= attempts or (retry_if is not None and not retry_if(exc)):
                raise
            # Throttling also slows the caller's token bucket; retry_after is a hint for
            # the dispatcher's own, longer backoff, not for these quick tries.
            await asyncio.sleep(backoff_delay(attempt, base, cap))
    raise AssertionError("unreachable")


class SingleFlight:
    """Concurrent callers with the same key share one in-flight coroutine's result.

    The work runs as its own task, so a caller that is cancelled (a submit timing out)
    does not cancel it for the others.
    """

    def __init__(self) -> None:
        self._inflight: dict[Any, asyncio.Task[Any]] = {}

    async def run(self, key: Any, factory: Callable[[], Awaitable[T]]) -> T:
        task = self._inflight.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(factory())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._drop(key, done))
        return await asyncio.shield(task)

    def _drop(self, key: Any, done: asyncio.Task[Any]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failure is raised to the waiters, not logged


class AwsClients:
    """One thread pool and a cache of boto3 clients for every connection the adapter uses."""

    def __init__(self, max_workers: int = 32, ecs_max_attempts: int = 1,
                 other_max_attempts: int = 3):
        self.max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        # ECS and Logs calls are paced and retried by the adapter itself; provisioning's
        # one-off calls (IAM, EC2, ECR, STS) keep a few botocore retries.
        self._attempts = {"ecs": ecs_max_attempts, "logs": ecs_max_attempts}
        self._other_attempts = other_max_attempts
        self._sessions: dict[Connection, boto3.Session] = {}
        self._clients: dict[tuple[str, Connection], Any] = {}
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the pool; the event loop keeps running."""
        if self._executor is None:  # made lazily, and again after close()
            self._executor = ThreadPoolExecutor(self.max_workers,
                                                thread_name_prefix="pushpool-aws")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def call(self, conn: Connection, service: str, method: str, **kwargs: Any) -> Any:
        """One AWS API call, with its failure mapped by ``map_error``."""
        def invoke() -> Any:
            return getattr(self.client(conn, service), method)(**kwargs)
        try:
            return await self.run(invoke)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_error(exc, f"{_service_title(service)} {_action_name(method)}") from exc

    async def resolve(self, conn: Connection) -> Connection:
        """The connection with its region filled from the profile or environment."""
        if conn.region:
            return conn
        try:
            session = await self.run(self._session, conn)
        except Exception as exc:
            raise map_error(exc, "AWS session") from exc
        if not session.region_name:
            raise PermanentProviderError(
                "region: no AWS region is set; set region in the pool's template, "
                "AWS_REGION / AWS_DEFAULT_REGION, or the profile's region")
        return replace(conn, region=session.region_name)

    def client(self, conn: Connection, service: str) -> Any:
        key = (service, conn)
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                from botocore.config import Config

                attempts = self._attempts.get(service, self._other_attempts)
                config = Config(
                    retries={"total_max_attempts": attempts, "mode": "standard"},
                    max_pool_connections=self.max_workers, connect_timeout=5,
                    read_timeout=30, user_agent_extra="pushpool")
                kwargs: dict[str, Any] = {"config": config}
                if conn.endpoint_url:
                    kwargs["endpoint_url"] = conn.endpoint_url
                client = self._session_locked(conn).client(service, **kwargs)
                self._clients[key] = client
        return client

    def _session(self, conn: Connection) -> boto3.Session:
        with self._lock:
            return self._session_locked(conn)

    def _session_locked(self, conn: Connection) -> boto3.Session:
        session = self._sessions.get(conn)
        if session is None:
            import boto3

            session = boto3.Session(botocore_session=_core_session(),
                                    profile_name=conn.profile, region_name=conn.region)
            if conn.role_arn:
                session = _assumed_role_session(session, conn)
            self._sessions[conn] = session
        return session

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._clients.clear()
            self._sessions.clear()


def _core_session() -> botocore.session.Session:
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _loader())
    return core


def _assumed_role_session(base: boto3.Session, conn: Connection) -> boto3.Session:
    """A session whose credentials come from sts:AssumeRole and refresh before expiry."""
    sts_kwargs: dict[str, Any] = {"region_name": base.region_name}
    if conn.endpoint_url:
        sts_kwargs["endpoint_url"] = conn.endpoint_url
    sts = base.client("sts", **sts_kwargs)

    def fetch() -> dict[str, str]:
        request: dict[str, Any] = {"RoleArn": conn.role_arn,
                                   "RoleSessionName": conn.session_name or "pushpool"}
        if conn.external_id:
            request["ExternalId"] = conn.external_id
        creds = sts.assume_role(**request)["Credentials"]
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"], "expiry_time": creds["Expiration"].isoformat()}

    from botocore.credentials import RefreshableCredentials

    credentials = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role")
    core = _core_session()
    # botocore has no public setter for refreshable credentials on a session.
    core._credentials = credentials
    import boto3

    return boto3.Session(botocore_session=core, region_name=base.region_name)


def _service_title(service: str) -> str:
    return {"ecs": "ECS", "ec2": "EC2", "iam": "IAM", "logs": "CloudWatch Logs",
            "ecr": "ECR", "sts": "STS"}.get(service, service)


def _action_name(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("_"))


def tag_list(tags: dict[str, str], key: str = "key", value: str = "value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in tags.items()]


def code_of(exc: BaseException) -> str:
    """The AWS error code behind a mapped provider error ('' when there is none)."""
    cause = exc.__cause__ if isinstance(exc, ProviderError) else exc
    return error_code(cause) if cause is not None else ""


def message_of(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, ProviderError) else exc
    return error_message(cause) if cause is not None else str(exc)
