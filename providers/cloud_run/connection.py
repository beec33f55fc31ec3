"""Google Cloud plumbing: connections, credentials, cached clients, a bounded thread pool.

``Connection`` is everything a call needs to reach a run from any process (project,
region, endpoint, the credentials or the choice of Application Default Credentials); it
travels in ``InfraRef.connection``, which the dispatcher stores encrypted. The SDK
(google-cloud-run, google-cloud-logging, google-auth) is imported inside the functions
here, never at module import, so ``import providers.cloud_run`` stays cheap.

Why threads: google-cloud-run 0.16 has no async REST transport (``JobsAsyncClient`` over
REST silently builds the sync one and fails on the first await), and its gRPC async
transport needs a channel made inside each event loop. The sync REST clients in a
bounded pool keep the event loop free, work the same against Google and an emulator, and
are safe to share between threads (requests sessions are). A cached client is found on
the event loop (``run_client``), so a call costs one trip through the pool, not two, and
its session reads the environment's proxy and CA settings once (``settle_session``), not
on every request (requests' ``trust_env`` looks for a .netrc file and the proxy variables
each time: about a fifth of a call's CPU against a fast server).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

from providers.base import PermanentProviderError

T = TypeVar("T")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
RUN_HOST = "https://run.googleapis.com"
LOGGING_HOST = "https://logging.googleapis.com"


class SecretText(str):
    """A str whose repr hides it: a key inside a connection mapping."""

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class Connection:
    """Where and as whom: project, region, endpoint, identity."""

    project: str
    region: str
    endpoint: str | None = None  # None: Google's global endpoints
    credential: str = "default"  # default | service_account_key | anonymous
    key_json: str | None = field(default=None, repr=False, compare=False)

    def facts(self) -> dict[str, Any]:
        """JSON-safe, for ``InfraRef.connection`` (the key kept, hidden from repr)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.key_json is not None:
            out["key_json"] = SecretText(self.key_json)
        return out

    @classmethod
    def from_facts(cls, facts: Mapping[str, Any]) -> Connection:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in facts.items() if k in names and v is not None}
        if not values.get("project") or not values.get("region"):
            raise PermanentProviderError(
                "not a Cloud Run reference: its connection has no project/region")
        if "key_json" in values:
            values["key_json"] = str(values["key_json"])
        return cls(**values)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def client_key(self) -> tuple[Any, ...]:
        digest = hashlib.sha256((self.key_json or "").encode()).hexdigest()[:16]
        return (self.endpoint, self.credential, digest)

    @property
    def emulated(self) -> bool:
        """An http:// loopback endpoint: an emulator that serves every API we use."""
        return self.credential == "anonymous" and bool(self.endpoint)

    def base_url(self, google_host: str) -> str:
        """Where a call to another API (Logging, provisioning) goes: the emulator, or
        Google's host for that API (a regional or private Cloud Run endpoint serves
        Cloud Run only)."""
        return (self.endpoint if self.emulated and self.endpoint else google_host).rstrip("/")


def connection_for(cfg: Any, project: str | None = None) -> Connection:
    """A Connection from a validated ``CloudRunConfig``; the project may come from the
    credentials (``project``) when the configuration names none."""
    creds = cfg.credentials
    endpoint = cfg.api_endpoint.rstrip("/") if cfg.api_endpoint else None
    kind = creds.kind if creds else "default"
    key = creds.service_account_key.get_secret_value() \
        if creds and creds.service_account_key else None
    if endpoint and urlsplit(endpoint).scheme == "http":
        kind, key = "anonymous", None  # plain http: loopback emulators only (validated)
    chosen = cfg.project or project
    if not chosen:
        raise PermanentProviderError(
            "project: no Google Cloud project is set; set project in the pool or the "
            "deployment (or GOOGLE_CLOUD_PROJECT for Application Default Credentials)")
    return Connection(project=chosen, region=cfg.region, endpoint=endpoint, credential=kind,
                      key_json=key)


def key_project(cfg: Any) -> str | None:
    """The project a service account key belongs to, if the configuration has a key."""
    creds = cfg.credentials
    if creds is None or creds.service_account_key is None:
        return None
    try:
        info = json.loads(creds.service_account_key.get_secret_value())
    except ValueError:
        return None
    project = info.get("project_id") if isinstance(info, dict) else None
    return str(project) if project else None


def make_credentials(conn: Connection) -> Any:
    """google-auth credentials for the connection (imported here, lazily)."""
    if conn.credential == "anonymous":
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    if conn.credential == "service_account_key":
        from google.oauth2 import service_account

        try:
            info = json.loads(conn.key_json or "")
            return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        except (ValueError, KeyError):
            raise PermanentProviderError(
                "credentials.service_account_key: the key could not be read; paste the "
                "key file's JSON as downloaded") from None
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        raise PermanentProviderError(
            "credentials: no Application Default Credentials found; run the dispatcher with "
            "a Google identity (workload identity, GOOGLE_APPLICATION_CREDENTIALS) or set "
            "credentials.kind 'service_account_key'") from None
    return credentials


def default_project() -> str | None:
    """The project Application Default Credentials name (environment first)."""
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def settle_session(session: Any, url: str) -> Any:
    """``session`` (a requests Session talking to ``url``) with the proxy and CA bundle
    the environment names for that host read now, and ``trust_env`` off so they are not
    read again per request. A .netrc entry is no longer applied: it could only replace
    the bearer token google-auth sets with a password."""
    from requests.utils import get_environ_proxies

    session.proxies.update(get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False
    return session


class GoogleClients:
    """Cached credentials and clients per connection, and the thread pool every blocking
    call runs in (``call``), so no call ever blocks the event loop."""

    def __init__(self, max_workers: int):
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._credentials: dict[tuple[Any, ...], Any] = {}

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers,
                                                thread_name_prefix="pushpool-cloud-run")
            return self._pool

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(),
                                          functools.partial(fn, *args, **kwargs))

    def credentials(self, conn: Connection) -> Any:
        key = conn.client_key()
        with self._lock:
            found = self._credentials.get(key)
        if found is None:
            found = make_credentials(conn)
            with self._lock:
                found = self._credentials.setdefault(key, found)
        return found

    def _cached(self, name: str, conn: Connection, factory: Callable[[], Any]) -> Any:
        key = (name, *conn.client_key())
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            client = factory()
            with self._lock:
                client = self._clients.setdefault(key, client)
        return client

    def _options(self, conn: Connection) -> Any:
        from google.api_core.client_options import ClientOptions

        return ClientOptions(api_endpoint=conn.endpoint) if conn.endpoint else None

    async def run_client(self, conn: Connection, service: str) -> Any:
        """``run(conn, service)``, found on the event loop once made (making one reads
        credentials, which may block: that happens in the pool)."""
        with self._lock:
            client = self._clients.get((f"run.{service}", *conn.client_key()))
        return client if client is not None else await self.call(self.run, conn, service)

    def run(self, conn: Connection, service: str) -> Any:
        """A run_v2 REST client: ``jobs``, ``executions`` or ``tasks``."""
        def factory() -> Any:
            from google.cloud import run_v2

            cls = {"jobs": run_v2.JobsClient, "executions": run_v2.ExecutionsClient,
                   "tasks": run_v2.TasksClient}[service]
            client: Any = cls(credentials=self.credentials(conn), transport="rest",
                              client_options=self._options(conn))
            # The REST transport's requests session (an attribute of the generated
            # transport, not a parameter of it).
            session = getattr(client.transport, "_session", None)
            if session is not None:
                settle_session(session, conn.endpoint or RUN_HOST)
            return client
        return self._cached(f"run.{service}", conn, factory)

    def logging(self, conn: Connection) -> Any:
        """A google-cloud-logging client over HTTP (its gRPC path would want DNS and TLS)."""
        def factory() -> Any:
            from google.cloud import logging as cloud_logging

            options = {"api_endpoint": conn.base_url(LOGGING_HOST)} if conn.emulated else None
            return cloud_logging.Client(project=conn.project,
                                        credentials=self.credentials(conn),
                                        _use_grpc=False, client_options=options)
        return self._cached("logging", conn, factory)

    def session(self, conn: Connection) -> Any:
        """An authorized requests session for the REST APIs provisioning uses."""
        def factory() -> Any:
            from google.auth.transport.requests import AuthorizedSession

            return AuthorizedSession(self.credentials(conn))
        return self._cached("session", conn, factory)

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            self._credentials.clear()
            pool, self._pool = self._pool, None
        for client in clients:
            transport = getattr(client, "transport", None)
            closer = getattr(transport, "close", None) or getattr(client, "close", None)
            try:
                if closer is not None:
                    closer()
            except Exception:  # closing is best effort; nothing is lost
                pass
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
