"""Where and as whom: the Modal server, environment, app and token of a pool's runs.

``Connection`` is everything a later call needs to reach a sandbox from any process; it
travels in ``InfraRef.connection`` (which the dispatcher stores encrypted). A token from
the pool's template travels with it (hidden from reprs); a token from the environment
does not: each process reads its own MODAL_TOKEN_ID / MODAL_TOKEN_SECRET (or profile).

``Clients`` makes one explicit ``modal.Client`` per (server, token), because Modal's
implicit client is a process-wide singleton pinned to the first server and token it saw,
and caches the looked-up apps. The SDK is imported inside the functions here only.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from providers.base import PermanentProviderError
from providers.modal.config import DEFAULT_SERVER_URL, ModalConfig

_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]+")


class SecretText(str):
    """A str whose repr hides it: a token secret inside a connection mapping."""

    def __repr__(self) -> str:
        return "'***'"


def app_name_for(pool_name: str) -> str:
    """``pushpool-<pool>`` as a valid Modal app name (≤ 64 of letters, digits, ``-_.``)."""
    safe = _UNSAFE.sub("-", pool_name).strip("-.") or "pool"
    name = f"pushpool-{safe}"
    if len(name) > 64 or safe != pool_name:
        digest = hashlib.sha256(pool_name.encode()).hexdigest()[:8]
        name = f"{name[:55]}-{digest}"
    return name


@dataclass(frozen=True)
class Connection:
    """Server, environment, app and token; ``token_source`` says where the token lives."""

    server_url: str
    app_name: str
    environment: str = ""  # "" is the workspace's default environment
    token_source: str = "environment"  # "template" (carried here) | "environment"
    token_id: str | None = None
    token_secret: str | None = field(default=None, repr=False, compare=False)

    def facts(self) -> dict[str, Any]:
        """JSON-safe, for ``InfraRef.connection`` (the secret kept, hidden from repr)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.token_secret is not None:
            out["token_secret"] = SecretText(self.token_secret)
        return out

    @classmethod
    def from_facts(cls, facts: Mapping[str, Any]) -> Connection:
        names = {f.name for f in fields(cls)}
        values = {k: str(v) for k, v in facts.items() if k in names and v is not None}
        if not values.get("server_url") or not values.get("app_name"):
            raise PermanentProviderError(
                "not a Modal reference: its connection has no server_url/app_name")
        return cls(**values)

    @property
    def secret_digest(self) -> str:
        return hashlib.sha256((self.token_secret or "").encode()).hexdigest()[:16]

    def client_key(self) -> tuple[str, ...]:
        """Which cached client serves this connection (app and environment are call
        arguments, not client settings)."""
        return (self.server_url, self.token_source, self.token_id or "", self.secret_digest)


def _modal_setting(key: str) -> Any:
    """A setting as modal resolves it (MODAL_<KEY>, then the active profile), or None."""
    from modal.config import config

    try:
        return config.get(key)
    except Exception:  # a malformed ~/.modal.toml: treat as unset, the caller says what
        return None


def resolve(cfg: ModalConfig, pool_name: str) -> Connection:
    """The connection a submit uses: the template's values, else modal's own settings."""
    server_url = cfg.server_url or _modal_setting("server_url") or DEFAULT_SERVER_URL
    environment = cfg.environment if cfg.environment is not None else (
        _modal_setting("environment") or "")
    app_name = cfg.app_name or app_name_for(pool_name)
    if cfg.credentials is not None:
        return Connection(str(server_url), app_name, str(environment), "template",
                          cfg.credentials.token_id,
                          cfg.credentials.token_secret.get_secret_value())
    return Connection(str(server_url), app_name, str(environment), "environment")


def token_of(conn: Connection) -> tuple[str, str]:
    """(token id, secret) for a connection, read from this process's environment when
    the token is not carried; PermanentProviderError naming the fix when there is none."""
    if conn.token_source == "template":
        if conn.token_id and conn.token_secret:
            return conn.token_id, conn.token_secret
        raise PermanentProviderError(
            "credentials: the run's Modal token is incomplete; set credentials.token_id and "
            "credentials.token_secret in the pool")
    token_id, token_secret = _modal_setting("token_id"), _modal_setting("token_secret")
    if not token_id or not token_secret:
        raise PermanentProviderError(
            "credentials: no Modal token; set credentials (token_id, token_secret from "
            "`modal token new`) in the pool, or MODAL_TOKEN_ID and MODAL_TOKEN_SECRET in "
            "the dispatcher's environment")
    return str(token_id), str(token_secret)


class Clients:
    """One open ``modal.Client`` per (server, token) and the apps looked up through it."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, ...], Any] = {}
        self._apps: dict[tuple[Any, ...], Any] = {}
        self._lock = asyncio.Lock()
        self._app_lock = asyncio.Lock()

    async def client(self, conn: Connection) -> Any:
        key = conn.client_key()
        found = self._clients.get(key)
        if found is not None:
            return found
        async with self._lock:
            found = self._clients.get(key)
            if found is None:
                found = await _open_client(conn)
                self._clients[key] = found
            return found

    async def app(self, conn: Connection, *, create: bool = True) -> Any:
        """The pool's app (made if missing when ``create``), cached per connection."""
        import modal

        key = (conn.client_key(), conn.environment, conn.app_name)
        app = self._apps.get(key)
        if app is not None:
            return app
        client = await self.client(conn)
        async with self._app_lock:  # a burst of first submits looks the app up once
            app = self._apps.get(key)
            if app is None:
                app = await modal.App.lookup.aio(conn.app_name, create_if_missing=create,
                                                 environment_name=conn.environment or None,
                                                 client=client)
                self._apps[key] = app
        return app

    def forget_app(self, conn: Connection) -> None:
        """Look the app up again next time (it may have been stopped and made again)."""
        self._apps.pop((conn.client_key(), conn.environment, conn.app_name), None)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        self._apps.clear()
        for client in clients:
            try:
                await client.close.aio()
            except Exception:  # closing is best effort; a dead connection is closed anyway
                pass


async def _open_client(conn: Connection) -> Any:
    """An explicit client for this connection's server (never the env singleton).

    ``Client.from_credentials`` reads the server URL from the process-wide modal config,
    so a pool with its own server_url needs the constructor (as ``Client.verify`` does);
    ``async with``'s enter opens it, ``close`` releases it.
    """
    import modal
    from modal_proto import api_pb2

    token_id, token_secret = token_of(conn)
    client = modal.Client(conn.server_url, api_pb2.CLIENT_TYPE_CLIENT, (token_id, token_secret))
    await client.__aenter__()
    return client
