"""The HTTP side of the fake Google APIs: a stdlib threading server on 127.0.0.1, routes,
Google's error bodies, injected faults and call counts.

Google's REST APIs (and the JSON transcoding the client libraries use) answer errors as
``{"error": {"code": <http status>, "message": ..., "status": "<canonical code>"}}``; the
clients map them by HTTP status (404 -> NotFound, 429 -> TooManyRequests, ...). Every
request is counted by operation name (``"jobs.run"``, ``"executions.get"``,
``"entries.list"``...) and any operation can be made to fail its next calls
(``fail_next``); ``request_times[i]`` is the wall-clock time ``requests[i]`` arrived (the
benchmarks' clock for "the request left the dispatcher"). The ``fields`` system parameter
(a partial response, ``executions(name,template/containers/env),nextPageToken``) trims
a success as Google does; other unknown query parameters (``$alt=json;enum-encoding=int``)
are ignored.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

Answer = tuple[int, Any]
Handler = Callable[[re.Match[str], dict[str, list[str]], Any], Answer]

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class ApiError(Exception):
    """Raised by a handler: answered as Google's error body."""

    def __init__(self, code: int, message: str, status: str | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")


def error_body(code: int, message: str, status: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message,
                      "status": status or STATUS_NAMES.get(code, "UNKNOWN")}}


# A ``fields`` mask: each selected key and what to keep under it (None: all of it).
FieldMask = dict[str, "FieldMask | None"]


def parse_fields(text: str) -> FieldMask:
    """Google's partial-response syntax: ``a,b/c,d(e,f/g)``."""
    mask, _ = _fields(text.replace(" ", ""), 0)
    return mask


def _fields(text: str, at: int) -> tuple[FieldMask, int]:
    mask: FieldMask = {}
    while at < len(text) and text[at] != ")":
        end = at
        while end < len(text) and text[end] not in ",()":
            end += 1
        path = text[at:end].split("/")
        inner: FieldMask | None = None
        if end < len(text) and text[end] == "(":
            inner, end = _fields(text, end + 1)
            end += 1  # the ")"
        node = mask
        for key in path[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        node[path[-1]] = inner
        at = end + 1 if end < len(text) and text[end] == "," else end
    return mask, at


def partial_response(value: Any, mask: FieldMask | None) -> Any:
    if mask is None:
        return value
    if isinstance(value, list):
        return [partial_response(item, mask) for item in value]
    if not isinstance(value, dict):
        return value
    return {key: partial_response(value[key], inner) for key, inner in mask.items()
            if key in value}


@dataclass
class Fault:
    code: int
    message: str
    status: str | None
    times: int


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str
    handler: Handler


class FakeServer:
    """Routes requests to handlers under one lock (the fake's state is not thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.routes: list[Route] = []
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, str, Any]] = []  # (operation, path, body)
        self.request_times: list[float] = []  # when each of ``requests`` arrived
        self.faults: dict[str, list[Fault]] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0

    def route(self, method: str, pattern: str, operation: str, handler: Handler) -> None:
        self.routes.append(Route(method, re.compile(pattern), operation, handler))

    def fail_next(self, operation: str, code: int, message: str, *, status: str | None = None,
                  times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` answer this error."""
        with self.lock:
            self.faults.setdefault(operation, []).append(Fault(code, message, status, times))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def reset_counts(self) -> None:
        with self.lock:
            self.calls.clear()
            self.requests.clear()
            self.request_times.clear()

    def _fault(self, operation: str) -> Fault | None:
        queue = self.faults.get(operation)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    def dispatch(self, method: str, raw_path: str, body: Any,
                 received: float | None = None) -> Answer:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        for route in self.routes:
            if route.method != method:
                continue
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            with self.lock:
                self.calls[route.operation] += 1
                self.requests.append((route.operation, path, body))
                self.request_times.append(received or time.time())
                fault = self._fault(route.operation)
                if fault is not None:
                    return fault.code, error_body(fault.code, fault.message, fault.status)
                try:
                    code, answer = route.handler(match, query, body)
                except ApiError as exc:
                    return exc.code, error_body(exc.code, exc.message, exc.status)
                if code == 200 and query.get("fields"):
                    answer = partial_response(answer, parse_fields(query["fields"][0]))
                return code, answer
        return 404, error_body(404, f"no such method: {method} {path}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> int:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else ~40 ms per request (delayed ACK)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                received = time.time()
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    code, answer = 400, error_body(400, "request body is not JSON")
                else:
                    code, answer = server.dispatch(method, self.path, body, received)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        threading.Thread(target=self._httpd.serve_forever, name="fake-google",
                         daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
