"""The fake Azure Resource Manager's HTTP side: TLS, tokens, api-versions, errors, faults.

One ``ArmServer`` on 127.0.0.1 serves every resource provider the tests use (each
registers its routes) plus a Microsoft Entra token endpoint, all over HTTPS with a
certificate from ``tls``. What it checks the way ARM does:

- every ARM request carries ``Authorization: Bearer <token>`` issued by the token endpoint
  for the expected audience (else 401 ``InvalidAuthenticationToken``);
- every ARM request carries an ``api-version`` this provider namespace supports (else 400
  ``MissingApiVersionParameter`` / ``NoRegisteredProviderFound`` /
  ``InvalidApiVersionParameter``, with the supported versions in the message);
- errors are ARM's body ``{"error": {"code", "message"}}`` with its status code.

Tests steer it with ``fail_next`` (a 429 with Retry-After, a 503, a 403, any ARM error,
for the next N calls of a kind) and read ``calls`` (a Counter by call kind, e.g.
``containerGroups.list``).
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.azure.tls import make_certificates

Json = Any
Answer = tuple[int, Json, dict[str, str]]


class ArmError(Exception):
    """An ARM error answer: status, ``error.code`` and ``error.message``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Json
    match: re.Match[str] | None = None
    received: float = 0.0  # wall-clock time the request arrived

    def group(self, name: str) -> str:
        assert self.match is not None
        return self.match.group(name)


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    kind: str  # what ``calls`` counts, e.g. "containerGroups.get"
    namespace: str  # picks the supported api-versions
    handler: Callable[[Request], Answer]
    resource_type: str = ""


@dataclass
class Fault:
    kind: str  # a call kind, or "*" for any ARM call
    status: int
    code: str
    message: str
    retry_after: float | None = None
    times: int = 1


@dataclass
class Principal:
    tenant_id: str
    client_id: str
    client_secret: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))


API_VERSIONS: dict[str, tuple[str, ...]] = {
    "Microsoft.ContainerInstance": ("2021-09-01", "2021-10-01", "2022-09-01",
                                    "2022-10-01-preview", "2023-02-01-preview", "2023-05-01",
                                    "2024-05-01-preview"),
    "Microsoft.Resources": ("2021-04-01", "2022-09-01", "2024-03-01", "2025-04-01"),
    "Microsoft.ManagedIdentity": ("2018-11-30", "2023-01-31", "2024-11-30"),
    "Microsoft.ContainerRegistry": ("2023-07-01", "2025-04-01", "2025-11-01"),
    "Microsoft.Authorization": ("2020-04-01-preview", "2022-04-01"),
}


class ArmServer:
    """HTTPS on 127.0.0.1:<ephemeral>; start() once per session, reset() per test."""

    def __init__(self, *, audience: str = "https://management.azure.com/"):
        self.audience = audience.rstrip("/") + "/"
        self.routes: list[Route] = []
        self.principals: dict[str, Principal] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, expiry)
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str]] = []  # (kind, method, path)
        self.request_times: list[float] = []  # when each of ``requests`` arrived
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self.base_url = ""
        self.ca_file = ""
        self._httpd: ThreadingHTTPServer | None = None
        self._ops: dict[str, Callable[[], tuple[str, Json]]] = {}
        self.op_polls = 0

    # ------------------------------------------------------------------ set-up

    def add_principal(self, tenant_id: str, client_id: str, client_secret: str) -> Principal:
        principal = Principal(tenant_id, client_id, client_secret)
        self.principals[client_id] = principal
        return principal

    def route(self, method: str, pattern: str, kind: str, namespace: str,
              handler: Callable[[Request], Answer], resource_type: str = "") -> None:
        self.routes.append(Route(method, re.compile(pattern, re.IGNORECASE), kind, namespace,
                                 handler, resource_type))

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.requests.clear()
            self.request_times.clear()
            self.faults.clear()
            self._ops.clear()
            self.op_polls = 0

    def fail_next(self, kind: str, status: int, code: str, message: str = "", *,
                  retry_after: float | None = None, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``kind`` with this ARM error."""
        with self.lock:
            self.faults.append(Fault(kind, status, code, message or f"fake {code}",
                                     retry_after, times))

    def count(self, *kinds: str) -> int:
        with self.lock:
            return sum(self.calls[k] for k in kinds)

    # ------------------------------------------------------------------ long-running ops

    def operation(self, subscription: str, namespace: str, location: str,
                  status: Callable[[], tuple[str, Json]]) -> str:
        """An Azure-AsyncOperation URL whose polls answer ``status()`` ->
        ("InProgress" | "Succeeded" | "Failed" | "Canceled", error or None)."""
        op_id = str(uuid.uuid4())
        self._ops[op_id] = status
        return (f"{self.base_url}/subscriptions/{subscription}/providers/{namespace}/locations/"
                f"{location}/operations/{op_id}?api-version={API_VERSIONS[namespace][-1]}")

    def _poll(self, request: Request) -> Answer:
        op_id = request.group("op")
        status_of = self._ops.get(op_id)
        if status_of is None:
            raise ArmError(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
        self.op_polls += 1
        status, error = status_of()
        body: dict[str, Json] = {"id": request.path, "name": op_id, "status": status,
                                 "startTime": _now()}
        if status != "InProgress":
            body["endTime"] = _now()
        if error:
            body["error"] = error
        return 200, body, {}

    # ------------------------------------------------------------------ serving

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-arm-")
        certs = make_certificates(self._tmp.name)
        self.ca_file = certs.ca_file
        for namespace in API_VERSIONS:
            self.route("GET", rf"/subscriptions/(?P<sub>[^/]+)/providers/{re.escape(namespace)}"
                       r"/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)",
                       "operations.get", namespace, self._poll)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else ~40 ms per request (delayed ACK)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # bodies may hold secrets; the fake logs nothing

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = server.handle(self.command, self.path,
                                                      dict(self.headers.items()), raw)
                data = b"" if body is None else (
                    body if isinstance(body, bytes) else json.dumps(body).encode())
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if data:
                    self.send_header("Content-Type", headers.get(
                        "Content-Type", "application/json; charset=utf-8"))
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", str(uuid.uuid4()))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve

        httpd = _Server(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert_file, certs.key_file)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self.base_url = f"https://127.0.0.1:{httpd.server_address[1]}"
        threading.Thread(target=httpd.serve_forever, name="fake-arm", daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._tmp.cleanup()

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               raw: bytes) -> tuple[int, Json, dict[str, str]]:
        received = time.time()
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if method == "POST" and split.path.endswith("/oauth2/v2.0/token"):
            return self._token(split.path, raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _error(400, "InvalidRequestContent", "The request content was invalid "
                          "and could not be deserialized.")
        request = Request(method, split.path, query, {k.lower(): v for k, v in headers.items()},
                          body, received=received)
        with self.lock:
            try:
                return self._dispatch(request)
            except ArmError as exc:
                return _error(exc.status, exc.code, exc.message, exc.headers)

    def _dispatch(self, request: Request) -> Answer:
        route, match = self._find(request)
        kind = route.kind if route else "unknown"
        self.calls[kind] += 1
        self.requests.append((kind, request.method, request.path))
        self.request_times.append(request.received)
        self._authenticate(request)
        if route is None or match is None:
            raise ArmError(404, "InvalidResourceType" if "/providers/" in request.path
                           else "NotFound", f"No route for {request.method} {request.path}")
        self._check_api_version(request, route, match)
        for fault in list(self.faults):
            if fault.kind in (kind, "*"):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                headers = {} if fault.retry_after is None else {
                    "Retry-After": f"{fault.retry_after:g}"}
                raise ArmError(fault.status, fault.code, fault.message, headers)
        request.match = match
        return route.handler(request)

    def _find(self, request: Request) -> tuple[Route | None, re.Match[str] | None]:
        for route in self.routes:
            if route.method != request.method:
                continue
            match = route.pattern.fullmatch(request.path)
            if match:
                return route, match
        return None, None

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        challenge = {"WWW-Authenticate": 'Bearer authorization_uri="https://login.'
                     'microsoftonline.com/common", error="invalid_token", '
                     'error_description="The authentication failed because of missing '
                     "'Authorization' header.\""}
        if not header.startswith("Bearer "):
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The "
                           "'Authorization' header is missing.", challenge)
        issued = self.tokens.get(header.removeprefix("Bearer "))
        if issued is None:
            raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if issued[1] < time.time():
            raise ArmError(401, "ExpiredAuthenticationToken", "The access token expiry UTC "
                           "time is earlier than current UTC time.")

    def _check_api_version(self, request: Request, route: Route, match: re.Match[str]) -> None:
        version = request.query.get("api-version")
        supported = API_VERSIONS[route.namespace]
        if not version:
            raise ArmError(400, "MissingApiVersionParameter", "The api-version query "
                           "parameter (?api-version=) is required for all requests.")
        if version in supported:
            return
        listed = ", ".join(supported)
        if route.namespace == "Microsoft.Resources":
            raise ArmError(400, "InvalidApiVersionParameter", f"The api-version '{version}' "
                           f"is invalid. The supported versions are '{listed}'.")
        rtype = route.resource_type or route.kind.split(".")[0]
        raise ArmError(400, "NoRegisteredProviderFound", "No registered resource provider "
                       f"found for location 'eastus' and API version '{version}' for type "
                       f"'{rtype}'. The supported api-versions are '{listed}'.")

    def _token(self, path: str, raw: bytes) -> tuple[int, Json, dict[str, str]]:
        """Microsoft Entra's client-credentials grant, as azure-identity sends it."""
        with self.lock:
            self.calls["token"] += 1
        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        tenant = path.strip("/").split("/")[0]
        principal = self.principals.get(form.get("client_id", ""))
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "AADSTS70003: unsupported grant type"}, {}
        if principal is None or principal.tenant_id != tenant:
            return 400, {"error": "unauthorized_client", "error_description":
                         f"AADSTS700016: Application with identifier "
                         f"'{form.get('client_id')}' was not found in the directory "
                         f"'{tenant}'."}, {}
        if not secrets.compare_digest(form.get("client_secret", ""), principal.client_secret):
            return 401, {"error": "invalid_client", "error_description":
                         "AADSTS7000215: Invalid client secret provided. Ensure the secret "
                         "being sent in the request is the client secret value, not the "
                         f"client secret ID, for a secret added to app "
                         f"'{principal.client_id}'."}, {}
        scope = form.get("scope", "")
        if scope.rstrip("/") not in (self.audience + ".default", self.audience.rstrip("/")
                                     + "/.default"):
            return 400, {"error": "invalid_scope", "error_description":
                         f"AADSTS500011: The resource principal named "
                         f"{scope.removesuffix('.default')} was not found in the tenant "
                         f"named {tenant}."}, {}
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = (principal.client_id, time.time() + 3600)
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                     "access_token": token}, {}


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops SYNs under 32 concurrent clients, and
    # the kernel's SYN retries (1 s, 3 s, 7 s) then look like a slow adapter.
    request_queue_size = 256
    daemon_threads = True


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> tuple[int, Json, dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, dict(headers or {})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
