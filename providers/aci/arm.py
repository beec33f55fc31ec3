"""Azure Resource Manager plumbing: clouds, connections, credentials, clients, errors.

``Connection`` is everything a call needs to reach a container group from any process;
it travels in ``InfraRef.connection`` (which the dispatcher stores encrypted). The SDK
(azure-core, azure-identity, azure-mgmt-containerinstance) is imported inside the
functions here, never at module import, so ``import providers.aci`` stays cheap.

Retries: the SDK's own retry policy is switched off (``retry_total=0``) so a 429 reaches
the adapter, whose token bucket must learn about it, and a 5xx becomes a
``RetryableProviderError`` the dispatcher backs off on; reads retry a little here
(``with_retries``) so one 503 never costs a watcher pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from providers.base import PermanentProviderError, ProviderError, RetryableProviderError

T = TypeVar("T")


@dataclass(frozen=True)
class Cloud:
    resource_manager: str
    authority_host: str
    portal: str


CLOUDS: dict[str, Cloud] = {
    "public": Cloud("https://management.azure.com", "https://login.microsoftonline.com",
                    "https://portal.azure.com"),
    "china": Cloud("https://management.chinacloudapi.cn", "https://login.chinacloudapi.cn",
                   "https://portal.azure.cn"),
    "usgovernment": Cloud("https://management.usgovcloudapi.net",
                          "https://login.microsoftonline.us", "https://portal.azure.us"),
}


class SecretText(str):
    """A str whose repr hides it: a client secret inside a connection mapping."""

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class Connection:
    """Where and as whom: subscription, resource group, endpoint, identity."""

    subscription_id: str
    resource_group: str
    cloud: str = "public"
    endpoint: str = CLOUDS["public"].resource_manager
    token_scope: str = CLOUDS["public"].resource_manager + "/.default"
    credential: str = "default"  # default | service_principal | managed_identity
    tenant_id: str | None = None
    client_id: str | None = None
    authority_host: str | None = None
    ca_bundle: str | None = None
    client_secret: str | None = field(default=None, repr=False, compare=False)

    def facts(self) -> dict[str, Any]:
        """JSON-safe, for ``InfraRef.connection`` (secret kept, hidden from repr)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.client_secret is not None:
            out["client_secret"] = SecretText(self.client_secret)
        return out

    @classmethod
    def from_facts(cls, facts: Mapping[str, Any]) -> Connection:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in facts.items() if k in names and v is not None}
        if not values.get("subscription_id") or not values.get("resource_group"):
            raise PermanentProviderError(
                "not an ACI reference: its connection has no subscription_id/resource_group")
        if "client_secret" in values:
            values["client_secret"] = str(values["client_secret"])
        return cls(**values)

    @property
    def secret_digest(self) -> str:
        return hashlib.sha256((self.client_secret or "").encode()).hexdigest()[:16]

    def client_key(self) -> tuple[Any, ...]:
        """Which cached client serves this connection (the resource group is a call
        argument, not a client setting)."""
        return (self.subscription_id.lower(), self.endpoint, self.token_scope,
                self.credential_key())

    def credential_key(self) -> tuple[Any, ...]:
        return (self.credential, self.tenant_id, self.client_id, self.authority_host,
                self.ca_bundle, self.secret_digest, self.endpoint)


def connection_from_config(cfg: Any) -> Connection:
    """A Connection from an ``AciConfig`` (validated)."""
    cloud = CLOUDS[cfg.cloud]
    endpoint = (cfg.resource_manager_endpoint or cloud.resource_manager).rstrip("/")
    scope = cfg.token_scope or cloud.resource_manager + "/.default"
    creds = cfg.credentials
    secret = creds.client_secret.get_secret_value() if creds and creds.client_secret else None
    return Connection(
        subscription_id=str(cfg.subscription_id), resource_group=str(cfg.resource_group_name),
        cloud=cfg.cloud, endpoint=endpoint, token_scope=scope,
        credential=creds.kind if creds else "default",
        tenant_id=creds.tenant_id if creds else None,
        client_id=creds.client_id if creds else None,
        authority_host=(creds.authority_host if creds and creds.authority_host else None),
        ca_bundle=cfg.ca_bundle, client_secret=secret)


def make_credential(conn: Connection) -> Any:
    """An azure-identity async credential for the connection (imported here, lazily)."""
    kwargs: dict[str, Any] = {}
    if conn.ca_bundle:
        kwargs["connection_verify"] = conn.ca_bundle
    authority = conn.authority_host or CLOUDS[conn.cloud].authority_host
    if conn.credential == "service_principal":
        from azure.identity.aio import ClientSecretCredential

        return ClientSecretCredential(str(conn.tenant_id), str(conn.client_id),
                                      str(conn.client_secret), authority=authority, **kwargs)
    if conn.credential == "managed_identity":
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=conn.client_id, **kwargs)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(authority=authority, **kwargs)


def transport_kwargs(conn: Connection) -> dict[str, Any]:
    """TLS and proxy settings for an ARM pipeline's aiohttp transport.

    The proxy is read from the environment (HTTPS_PROXY, NO_PROXY) once, here, and
    given to the pipeline, and aiohttp is told not to read the environment itself: with
    ``trust_env`` it looks up the proxy and parses ~/.netrc on a worker thread for
    every request, two thread hops a call that cost the event loop more than the call."""
    import urllib.request
    from urllib.parse import urlsplit

    kwargs: dict[str, Any] = {"use_env_settings": False}
    if conn.ca_bundle:
        kwargs["connection_verify"] = conn.ca_bundle
    host = urlsplit(conn.endpoint).hostname or ""
    proxies = {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
    if proxies and not urllib.request.proxy_bypass(host):
        kwargs["proxies"] = proxies
    return kwargs


def client_kwargs(conn: Connection, polling_interval: float) -> dict[str, Any]:
    """What every management client is built with: endpoint, scope, TLS and proxy, no
    SDK retries, and an LRO polling interval of our own (the SDK's default is 30 s)."""
    return {"base_url": conn.endpoint, "credential_scopes": [conn.token_scope],
            "polling_interval": polling_interval, "retry_total": 0,
            **transport_kwargs(conn)}


# The api-version of Microsoft.ContainerInstance that azure-mgmt-containerinstance 10.x
# speaks; every plain-REST call (``arm_json``) asks for the same.
ACI_API_VERSION = "2023-05-01"


def make_pipeline(credential: Any, conn: Connection) -> Any:
    """An ARM pipeline for plain REST calls whose JSON we read ourselves: the policies a
    management client has (user agent, proxy, bearer token with ARM's challenge
    handling, ARM's redacting HTTP log), without retries (as ``client_kwargs``) and
    redirects."""
    from azure.core.pipeline import policies
    from azure.mgmt.core import AsyncARMPipelineClient
    from azure.mgmt.core.policies import (
        ARMHttpLoggingPolicy,
        AsyncARMChallengeAuthenticationPolicy,
    )

    kwargs = transport_kwargs(conn)
    return AsyncARMPipelineClient(base_url=conn.endpoint, policies=[
        policies.RequestIdPolicy(), policies.HeadersPolicy(),
        policies.UserAgentPolicy(sdk_moniker="pushpool-aci"),
        policies.ProxyPolicy(kwargs.pop("proxies", None)),
        AsyncARMChallengeAuthenticationPolicy(credential, conn.token_scope),
        ARMHttpLoggingPolicy()], **kwargs)


async def arm_json(pipeline: Any, method: str, path: str, body: bytes | None = None) -> Any:
    """One ARM call through ``pipeline`` and its JSON as ARM sent it (None for an empty
    body); a non-2xx answer raises the ``HttpResponseError`` the management client
    would (status, ARM's error code and message, headers), so ``provider_error`` reads
    it alike. The client's own operations turn every answer into model objects, even
    with ``cls=``: for a create that was 40 % of the adapter's CPU, for a list of a
    thousand groups most of a second of the event loop's time."""
    from azure.core.exceptions import HttpResponseError
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.exceptions import ARMErrorFormat

    url = path if "://" in path else pipeline.format_url(
        f"{path}{'&' if '?' in path else '?'}api-version={ACI_API_VERSION}")
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    response = await pipeline.send_request(HttpRequest(method, url, headers=headers,
                                                       content=body))
    if not 200 <= response.status_code < 300:
        raise HttpResponseError(response=response, error_format=ARMErrorFormat)
    return response.json() if response.content else None


async def list_json(pipeline: Any, path: str) -> AsyncIterator[list[dict[str, Any]]]:
    """The pages of an ARM list operation (``value``, following ``nextLink``) as JSON."""
    url: str | None = path
    while url:
        page = await arm_json(pipeline, "GET", url) or {}
        yield list(page.get("value") or [])
        url = page.get("nextLink") or None


class ArmClients:
    """Cached credentials and ContainerInstanceManagementClients, one per connection and
    event loop (an aio client is bound to the loop that made its session)."""

    def __init__(self, polling_interval: float):
        self.polling_interval = polling_interval
        self._credentials: dict[tuple[Any, ...], Any] = {}
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Clients of a finished loop cannot be closed from this one; drop them.
            self._credentials.clear()
            self._clients.clear()
            self._loop = loop

    def credential(self, conn: Connection) -> Any:
        self._check_loop()
        key = conn.credential_key()
        cred = self._credentials.get(key)
        if cred is None:
            cred = self._credentials[key] = make_credential(conn)
        return cred

    def aci(self, conn: Connection) -> Any:
        self._check_loop()
        key = ("aci", *conn.client_key())
        client = self._clients.get(key)
        if client is None:
            from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

            client = ContainerInstanceManagementClient(
                self.credential(conn), conn.subscription_id,
                **client_kwargs(conn, self.polling_interval))
            self._clients[key] = client
        return client

    def pipeline(self, conn: Connection) -> Any:
        """A plain-REST ARM pipeline (``make_pipeline``), cached like the clients."""
        self._check_loop()
        key = ("pipeline", *conn.client_key())
        pipeline = self._clients.get(key)
        if pipeline is None:
            pipeline = self._clients[key] = make_pipeline(self.credential(conn), conn)
        return pipeline

    def other(self, conn: Connection, name: str, factory: Callable[[], Any]) -> Any:
        """Any other management client (resources, for a group's location), cached."""
        self._check_loop()
        key = (name, *conn.client_key())
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = factory()
        return client

    async def close(self) -> None:
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self._clients.clear()
            self._credentials.clear()
            return
        for item in [*self._clients.values(), *self._credentials.values()]:
            try:
                await item.close()
            except Exception:  # closing is best effort; nothing is lost
                pass
        self._clients.clear()
        self._credentials.clear()


# ---------------------------------------------------------------------------- errors

PERMANENT_CODES = frozenset({
    "AuthorizationFailed", "InvalidAuthenticationToken", "InvalidAuthenticationTokenAudience",
    "InvalidAuthenticationTokenTenant", "AuthenticationFailed", "ExpiredAuthenticationToken",
    "InaccessibleImage", "InvalidImage", "InvalidImageName", "RegistryErrorResponse",
    "ContainerGroupQuotaReached", "QuotaExceeded", "StandardCoresQuotaReached",
    "DedicatedCoresQuotaReached", "ContainerGroupsQuotaReached", "SubscriptionNotFound",
    "ResourceGroupNotFound", "InvalidContainerGroupName", "LinkedAuthorizationFailed",
    "MissingSubscriptionRegistration", "SkuNotAvailable", "ServiceUnavailableForRegion",
    "InvalidResourceLocation", "LocationNotAvailableForResourceType",
})
# ARM's "try again" codes that arrive with a 4xx status.
RETRYABLE_CODES = frozenset({
    "ContainerGroupTransitioning", "AnotherOperationInProgress", "Conflict",
    "TooManyRequests", "SubscriptionRequestsThrottled", "ResourceGroupRequestsThrottled",
    "RetryableError", "PrincipalNotFound",
})
_HINTS = {
    "AuthorizationFailed": "grant the dispatcher's identity 'Contributor' (or Microsoft."
                           "ContainerInstance/containerGroups/*) on the resource group",
    "ResourceGroupNotFound": "resource_group_name: create the resource group or run "
                             "`work-pool create --provision-infra`",
    "SubscriptionNotFound": "subscription_id: check the subscription id and that the "
                            "credentials can see it",
    "MissingSubscriptionRegistration": "register the provider: `az provider register "
                                       "--namespace Microsoft.ContainerInstance`",
    "InaccessibleImage": "image: check the image name and image_registry",
    "ContainerGroupQuotaReached": "delete unused container groups or ask Azure for a "
                                  "higher quota",
    "InvalidAuthenticationTokenAudience": "token_scope: use the Resource Manager "
                                          "endpoint's scope ('<endpoint>/.default')",
}


def code_of(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", None) or getattr(exc, "azure_code", "") or "")


def azure_message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None)
    if message:
        return str(message)
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def retry_after_of(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name in ("Retry-After", "retry-after", "x-ms-retry-after-ms"):
        value = headers.get(name) if hasattr(headers, "get") else None
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            return None
        return seconds / 1000 if name == "x-ms-retry-after-ms" else seconds
    return None


def provider_error(exc: BaseException, what: str) -> ProviderError:
    """An SDK exception as the contract's error, with Azure's code and message."""
    if isinstance(exc, ProviderError):
        return exc
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ServiceRequestError | ServiceResponseError | asyncio.TimeoutError
                  | ConnectionError):
        return RetryableProviderError(f"{what}: Azure did not answer ({azure_message(exc)})")
    status = getattr(exc, "status_code", None)
    code = code_of(exc)
    message = azure_message(exc)
    text = f"{what}: Azure {code or status or type(exc).__name__}: {message}"
    hint = _HINTS.get(code)
    if isinstance(exc, ClientAuthenticationError) and not code:  # Entra, not ARM
        return PermanentProviderError(
            f"{what}: Azure sign-in failed: {message}; check credentials (tenant_id, "
            "client_id, client_secret) or the environment DefaultAzureCredential reads")
    if not isinstance(exc, HttpResponseError):
        return RetryableProviderError(f"{what}: {type(exc).__name__}: {message}")
    if status == 429 or code in ("TooManyRequests", "SubscriptionRequestsThrottled",
                                 "ResourceGroupRequestsThrottled"):
        return RetryableProviderError(text, throttled=True, retry_after=retry_after_of(exc))
    if status is not None and (status >= 500 or status == 408):
        return RetryableProviderError(text, retry_after=retry_after_of(exc))
    if code in PERMANENT_CODES:
        return PermanentProviderError(f"{text}" + (f" ({hint})" if hint else ""))
    if code in RETRYABLE_CODES or status == 409:
        return RetryableProviderError(text, retry_after=retry_after_of(exc))
    return PermanentProviderError(text + (f" ({hint})" if hint else ""))


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 404 and code_of(exc) != "ResourceGroupNotFound"


async def with_retries(call: Callable[[], Awaitable[T]], what: str, *, attempts: int,
                       base: float, cap: float) -> T:
    """Run ``call``; a transient failure (5xx, timeout) is tried again with jittered
    backoff, at most ``attempts`` times in all. Throttling is not retried here: it
    goes to the caller, whose rate limiter must hear of it."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            error = provider_error(exc, what)
            if not isinstance(error, RetryableProviderError) or error.throttled \
                    or attempt == attempts:
                raise error from exc
            delay = min(cap, base * 2 ** (attempt - 1))
            await asyncio.sleep(delay / 2 + random.random() * delay / 2)
    raise AssertionError("unreachable")
