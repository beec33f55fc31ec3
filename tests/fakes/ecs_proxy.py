"""moto's AWS server with the ECS behaviour moto lacks, for the ECS adapter's tests.

Run as a script: ``python tests/fakes/ecs_proxy.py [--port N]``; it prints
``READY <port>`` once it listens on 127.0.0.1. It serves moto's own WSGI app in this
process and sits in front of it, adding only what moto does not do:

- RunTask ``clientToken`` idempotency as AWS documents it (per cluster, 24 h): the same
  token with the same parameters answers the original result without a new task; the
  same token with other parameters is a ``ConflictException``.
- AWS answers moto gets wrong: DescribeTasks lists unknown tasks under ``failures`` as
  MISSING; StopTask sets ``stopCode=UserInitiated`` and refuses unknown tasks with
  InvalidParameterException (moto: HTTP 500); RunTask refuses INACTIVE definitions.
- Chosen outcomes for chosen tasks (moto always reports exit 0): ``POST
  /_fake/tasks/outcome`` sets lastStatus, desiredStatus, stopCode, stoppedReason and
  container exit codes and reasons; ``POST /_fake/tasks/forget`` makes ECS forget a task.
- Injected faults: ``POST /_fake/faults`` with ``{"action": "RunTask", "kind":
  "throttle" | "429" | "500" | "503" | "lost" | "failure" | "error", "every": 3}``
  ("lost": moto does the work, the client gets a 500, as when a response is lost).
- Counting: ``GET /_fake/stats`` (per action; every RunTask with its time and outcome).
- moto bug 1 (task-level memory only -> HTTP 500 in RunTask) is patched.

``POST /_fake/reset`` clears the proxy's state and, given ``{"services": [...]}``,
resets just those moto services (cheap, unlike ``/moto-api/reset``, which rebuilds
every service, IAM's managed policies and EC2's default VPCs included).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from moto.ecs.models import EC2ContainerServiceBackend, ecs_backends
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

StartResponse = Callable[..., Any]
TOKEN_TTL = 24 * 3600
JSON_TYPE = "application/x-amz-json-1.1"


def _patch_moto_bug_1() -> None:
    """A Fargate definition with task-level memory only is valid; moto's RunTask adds
    ``None`` to an int. Count a container without memory as 0 MiB instead."""
    original = EC2ContainerServiceBackend._calculate_task_resource_requirements
    keys = ("memory", "memoryReservation", "Memory", "MemoryReservation")

    def patched(task_definition: Any) -> dict[str, Any]:
        fixed = [cd if any(k in cd for k in keys) else {**cd, "memoryReservation": 0}
                 for cd in task_definition.container_definitions]
        shim = SimpleNamespace(container_definitions=fixed)
        return original(shim)  # type: ignore[arg-type]

    EC2ContainerServiceBackend._calculate_task_resource_requirements = (  # type: ignore[method-assign]
        staticmethod(patched))


def _backends() -> Iterable[Any]:
    for account in list(ecs_backends.values()):
        yield from list(account.values())


def _find_task(ref: str) -> tuple[Any, str, str, Any] | None:
    """(backend, cluster name, task ARN, task) for a task ARN or id."""
    wanted = ref.rsplit("/", 1)[-1]
    for backend in _backends():
        for cluster, tasks in list(backend.tasks.items()):
            for arn, task in list(tasks.items()):
                if arn == ref or arn.rsplit("/", 1)[-1] == wanted:
                    return backend, cluster, arn, task
    return None


def _reset_services(names: Iterable[str]) -> None:
    from moto.backends import get_backend

    for name in names:
        for account in list(get_backend(name).values()):  # type: ignore[call-overload]
            account.reset()


def _cluster_name(value: Any) -> str:
    return str(value or "default").rsplit("/", 1)[-1]


class Proxy:
    def __init__(self, app: Callable[..., Any]):
        self.app = app
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.tokens: dict[tuple[str, str], dict[str, Any]] = {}
            self.token_locks: dict[tuple[str, str], threading.Lock] = {}
            self.rules: list[dict[str, Any]] = []
            self.actions: dict[str, dict[str, int]] = {}
            self.run_tasks: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["fake.arrived"] = time.time()  # RunTask records keep arrival, not completion
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if path.startswith("/_fake/"):
            return self._test_api(environ, path, body, start_response)
        service, action = self._action(environ, body)
        self._count(action, "received")
        rule = self._fault_for(service, action)
        if rule is not None and rule["kind"] != "lost":
            self._count(action, "faulted")
            if action == "RunTask":
                self._log_run_task(environ, body, f"fault:{rule['kind']}", [])
            return self._fault(rule, service, start_response)
        if action == "RunTask":
            status, headers, payload = self._run_task(environ, body)
        elif action == "StopTask":
            status, headers, payload = self._stop_task(environ, body)
        elif action == "DescribeTasks":
            status, headers, payload = self._describe_tasks(environ, body)
        else:
            status, headers, payload = self._forward(environ)
        if rule is not None:  # "lost": the work is done, the answer never arrives
            self._count(action, "faulted")
            return self._fault({**rule, "kind": "500"}, service, start_response)
        start_response(status, headers)
        return [payload]

    def _forward(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = self.app(environ, capture)
        try:
            payload = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        action = self._action(environ, b"")[1]
        self._count(action, "forwarded")
        return captured["status"], captured["headers"], payload

    @staticmethod
    def _action(environ: dict[str, Any], body: bytes) -> tuple[str, str]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            service, _, action = target.partition(".")
            return service, action
        if body:
            form = parse_qs(body.decode(errors="replace"))
            action = (form.get("Action") or [""])[0]
            auth = environ.get("HTTP_AUTHORIZATION", "")
            service = auth.split("/")[3] if auth.count("/") >= 4 else ""
            return service, action
        return "", ""

    def _count(self, action: str, what: str) -> None:
        with self.lock:
            counters = self.actions.setdefault(action, {})
            counters[what] = counters.get(what, 0) + 1

    # ------------------------------------------------------------------ faults

    def _fault_for(self, service: str, action: str) -> dict[str, Any] | None:
        with self.lock:
            for rule in self.rules:
                if rule["action"] != action:
                    continue
                if rule.get("service") and rule["service"] not in service:
                    continue
                rule["seen"] += 1
                if rule["seen"] % int(rule.get("every") or 1):
                    continue
                if rule.get("times") is not None and rule["fired"] >= rule["times"]:
                    continue
                rule["fired"] += 1
                return dict(rule)
        return None

    @staticmethod
    def _fault(rule: dict[str, Any], service: str,
               start_response: StartResponse) -> Iterable[bytes]:
        kind = rule["kind"]
        if kind == "failure":
            payload = {"tasks": [], "failures": [
                {"arn": rule.get("arn", "arn:aws:ecs:us-east-1:123456789012:container/x"),
                 "reason": rule.get("reason", "RESOURCE:MEMORY"),
                 "detail": rule.get("detail", "")}]}
            start_response("200 OK", [("Content-Type", JSON_TYPE)])
            return [json.dumps(payload).encode()]
        status, code, message = {
            "throttle": (400, "ThrottlingException", "Rate exceeded"),
            "429": (429, "TooManyRequestsException", "Too Many Requests"),
            "500": (500, "ServerException", "Service encountered an internal error"),
            "503": (503, "ServiceUnavailableException", "Service unavailable"),
        }.get(kind, (int(rule.get("status", 400)), rule.get("code", "ClientException"),
                     rule.get("message", "injected error")))
        reason = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
        if service in ("iam", "sts", "ec2"):
            request_id = uuid.uuid4().hex
            if service == "ec2":
                xml = (f"<Response><Errors><Error><Code>{code}</Code><Message>{message}"
                       f"</Message></Error></Errors><RequestID>{request_id}</RequestID>"
                       "</Response>")
            else:
                xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                       f"<Message>{message}</Message></Error><RequestId>{request_id}"
                       "</RequestId></ErrorResponse>")
            start_response(f"{status} {reason}", [("Content-Type", "text/xml")])
            return [xml.encode()]
        start_response(f"{status} {reason}", [("Content-Type", JSON_TYPE)])
        return [json.dumps({"__type": code, "message": message}).encode()]

    # ------------------------------------------------------------------ ECS fixes

    def _run_task(self, environ: dict[str, Any],
                  body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        request = json.loads(body or b"{}")
        inactive = self._inactive_definition(str(request.get("taskDefinition") or ""))
        if inactive:
            self._log_run_task(environ, body, "inactive", [])
            return _json_error(400, "ClientException", "TaskDefinition is inactive")
        token = request.get("clientToken")
        if not token:
            status, headers, payload = self._forward(environ)
            self._log_run_task(environ, body, "created" if status.startswith("200") else "error",
                               _task_arns(payload))
            return status, headers, payload
        key = (_cluster_name(request.get("cluster")), str(token))
        params = json.dumps({k: v for k, v in request.items() if k != "clientToken"},
                            sort_keys=True)
        with self.lock:
            token_lock = self.token_locks.setdefault(key, threading.Lock())
        with token_lock:
            seen = self.tokens.get(key)
            if seen is not None and time.time() - seen["time"] < TOKEN_TTL:
                if seen["params"] != params:
                    self._log_run_task(environ, body, "conflict", [])
                    self._count("RunTask", "conflicts")
                    return _json_error(
                        400, "ConflictException",
                        "The specified client token has already been used in a request "
                        "with different parameters.")
                self._count("RunTask", "replayed")
                self._log_run_task(environ, body, "replayed", _task_arns(seen["payload"]))
                return seen["status"], seen["headers"], seen["payload"]
            status, headers, payload = self._forward(environ)
            if status.startswith("200"):
                self.tokens[key] = {"params": params, "status": status, "headers": headers,
                                    "payload": payload, "time": time.time()}
            self._log_run_task(environ, body, "created" if status.startswith("200") else "error",
                               _task_arns(payload))
            return status, headers, payload

    @staticmethod
    def _inactive_definition(ref: str) -> bool:
        name = ref.rsplit("/", 1)[-1]
        if ":" not in name:
            return False
        family, _, revision = name.partition(":")
        for backend in _backends():
            definition = backend.task_definitions.get(family, {}).get(
                int(revision) if revision.isdigit() else -1)
            if definition is not None:
                return bool(definition.status == "INACTIVE")
        return False

    def _stop_task(self, environ: dict[str, Any],
                   body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        request = json.loads(body or b"{}")
        found = _find_task(str(request.get("task") or ""))
        if found is None or found[1] != _cluster_name(request.get("cluster")):
            return _json_error(400, "InvalidParameterException",
                               "The referenced task was not found.")
        status, headers, payload = self._forward(environ)
        if status.startswith("200"):
            task = found[3]
            task.stop_code = "UserInitiated"
            answer = json.loads(payload)
            answer.setdefault("task", {})["stopCode"] = "UserInitiated"
            payload = json.dumps(answer).encode()
            headers = _with_length(headers, payload)
        return status, headers, payload

    def _describe_tasks(self, environ: dict[str, Any],
                        body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        status, headers, payload = self._forward(environ)
        if not status.startswith("200"):
            return status, headers, payload
        request = json.loads(body or b"{}")
        answer = json.loads(payload)
        returned = {t.get("taskArn", "").rsplit("/", 1)[-1] for t in answer.get("tasks", [])}
        failures = answer.setdefault("failures", [])
        for ref in request.get("tasks") or []:
            if ref.rsplit("/", 1)[-1] not in returned:
                failures.append({"arn": ref, "reason": "MISSING"})
        payload = json.dumps(answer, default=str).encode()
        return status, _with_length(headers, payload), payload

    def _log_run_task(self, environ: dict[str, Any], body: bytes, outcome: str,
                      arns: list[str]) -> None:
        request = json.loads(body or b"{}")
        with self.lock:
            self.run_tasks.append({
                "t": environ["fake.arrived"], "done": time.time(), "outcome": outcome,
                "token": request.get("clientToken"),
                "started_by": request.get("startedBy"), "cluster": request.get("cluster"),
                "task_definition": request.get("taskDefinition"), "task_arns": arns,
                "request": request})

    # ------------------------------------------------------------------ test API

    def _test_api(self, environ: dict[str, Any], path: str, body: bytes,
                  start_response: StartResponse) -> Iterable[bytes]:
        data = json.loads(body or b"{}")
        method = environ.get("REQUEST_METHOD", "GET")
        answer: Any = {"ok": True}
        status = "200 OK"
        if path == "/_fake/reset":
            self.reset()
            _reset_services(data.get("services") or [])
        elif path == "/_fake/faults" and method == "DELETE":
            with self.lock:
                self.rules = []
        elif path == "/_fake/faults":
            with self.lock:
                self.rules.append({**data, "seen": 0, "fired": 0})
        elif path == "/_fake/stats":
            with self.lock:
                answer = {"actions": self.actions, "run_tasks": self.run_tasks,
                          "rules": self.rules}
        elif path == "/_fake/tasks/outcome":
            answer, status = self._set_outcome(data)
        elif path == "/_fake/tasks/forget":
            found = _find_task(str(data.get("task") or ""))
            if found is None:
                answer, status = {"error": "no such task"}, "404 Not Found"
            else:
                backend, cluster, arn, _ = found
                del backend.tasks[cluster][arn]
        else:
            answer, status = {"error": f"unknown test route {path}"}, "404 Not Found"
        payload = json.dumps(answer, default=str).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(payload)))])
        return [payload]

    @staticmethod
    def _set_outcome(data: dict[str, Any]) -> tuple[dict[str, Any], str]:
        found = _find_task(str(data.get("task") or ""))
        if found is None:
            return {"error": "no such task"}, "404 Not Found"
        task = found[3]
        if "lastStatus" in data:
            task.status = data["lastStatus"]
        if "desiredStatus" in data:
            task.desired_status = data["desiredStatus"]
        elif data.get("lastStatus") == "STOPPED":
            task.desired_status = "STOPPED"
        if "stopCode" in data:
            task.stop_code = data["stopCode"]
        if "stoppedReason" in data:
            task.stopped_reason = data["stoppedReason"]
        if data.get("noContainers"):
            task.containers = []
        for index, change in enumerate(data.get("containers") or []):
            if index >= len(task.containers):
                break
            container = task.containers[index]
            if "exitCode" in change:
                container.exitCode = change["exitCode"]
            if "reason" in change:
                container.reason = change["reason"]
            container.last_status = change.get("lastStatus", task.status)
        return {"ok": True, "task": found[2]}, "200 OK"


def _task_arns(payload: bytes) -> list[str]:
    try:
        return [t["taskArn"] for t in json.loads(payload).get("tasks", [])]
    except (ValueError, AttributeError, KeyError, TypeError):
        return []


def _with_length(headers: list[tuple[str, str]], payload: bytes) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() != "content-length"] + [
        ("Content-Length", str(len(payload)))]


def _json_error(status: int, code: str,
                message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    payload = json.dumps({"__type": code, "message": message}).encode()
    return f"{status} Bad Request", [("Content-Type", JSON_TYPE),
                                     ("Content-Length", str(len(payload)))], payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _patch_moto_bug_1()
    app = Proxy(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True,
                         request_handler=MotoRequestHandler)
    print(f"READY {server.server_address[1]}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
