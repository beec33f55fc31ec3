"""The fake Cloud Run Admin API v2: jobs, executions, tasks and their long-running
operations, as the REST (JSON transcoding) face of run.googleapis.com serves them.

Faithful where the adapter depends on it: camelCase JSON with enum names, int64 as
strings, ``Any`` values with ``@type``; ``create_job``/``delete_job``/``update_job``
answer an Operation the first poll completes; ``run_job`` answers an Operation whose
metadata is the new Execution and which ends only when the execution does (cancelling
ends it too, with no error, as Cloud Run does); the execution's template carries the
run's overrides (env, args); exit codes live on tasks (``lastAttemptResult.exitCode``);
execution names are ``<job>-<5 random characters>``; listing executions takes only
``pageSize``/``pageToken`` and answers newest first.

Test controls move an execution through its lifecycle: ``start``, ``succeed``,
``fail(exit_code)``, ``fail_to_start(message)``, ``vanish``; ``auto_start`` makes new
executions run at once.
"""

from __future__ import annotations

import copy
import random
import re
import string
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.fakes.cloud_run.server import Answer, ApiError, FakeServer

T_JOB = "type.googleapis.com/google.cloud.run.v2.Job"
T_EXEC = "type.googleapis.com/google.cloud.run.v2.Execution"
LOC = r"projects/[^/]+/locations/[^/]+"
_JOB_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CloudRunApi:
    def __init__(self, server: FakeServer):
        self.server = server
        self.jobs: dict[str, dict[str, Any]] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.auto_start = False
        self._register()

    def reset(self) -> None:
        with self.server.lock:
            self.jobs.clear()
            self.executions.clear()
            self.tasks.clear()
            self.operations.clear()
            self.auto_start = False

    # ------------------------------------------------------------------ routes

    def _register(self) -> None:
        r = self.server.route
        r("POST", rf"/v2/({LOC})/jobs", "jobs.create", self._create_job)
        r("GET", rf"/v2/({LOC})/jobs", "jobs.list", self._list_jobs)
        r("GET", rf"/v2/({LOC}/operations/[^/]+)", "operations.get", self._get_operation)
        r("POST", rf"/v2/({LOC}/jobs/[^/:]+):run", "jobs.run", self._run_job)
        r("GET", rf"/v2/({LOC}/jobs/[^/:]+)", "jobs.get", self._get_job)
        r("PATCH", rf"/v2/({LOC}/jobs/[^/:]+)", "jobs.update", self._update_job)
        r("DELETE", rf"/v2/({LOC}/jobs/[^/:]+)", "jobs.delete", self._delete_job)
        r("GET", rf"/v2/({LOC}/jobs/[^/]+)/executions", "executions.list",
          self._list_executions)
        r("GET", rf"/v2/({LOC}/jobs/[^/]+/executions/[^/:]+)/tasks", "tasks.list",
          self._list_tasks)
        r("GET", rf"/v2/({LOC}/jobs/[^/]+/executions/[^/:]+)", "executions.get",
          self._get_execution)
        r("POST", rf"/v2/({LOC}/jobs/[^/]+/executions/[^/:]+):cancel", "executions.cancel",
          self._cancel_execution)
        r("DELETE", rf"/v2/({LOC}/jobs/[^/]+/executions/[^/:]+)", "executions.delete",
          self._delete_execution)

    @staticmethod
    def _location(name: str) -> str:
        return "/".join(name.split("/")[:4])

    def _operation(self, location: str, *, metadata: dict[str, Any], done: bool,
                   response: dict[str, Any] | None = None, execution: str | None = None,
                   complete_on_poll: dict[str, Any] | None = None) -> dict[str, Any]:
        name = f"{location}/operations/{uuid.uuid4()}"
        op: dict[str, Any] = {"name": name, "done": done, "metadata": metadata}
        if response is not None:
            op["response"] = response
        if execution is not None:
            op["_execution"] = execution
        if complete_on_poll is not None:
            op["_complete_on_poll"] = complete_on_poll
        self.operations[name] = op
        return self._public(op)

    @staticmethod
    def _public(op: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in op.items() if not k.startswith("_")}

    def _job(self, name: str) -> dict[str, Any]:
        job = self.jobs.get(name)
        if job is None:
            raise ApiError(404, f"Resource '{name.rsplit('/', 1)[-1]}' of kind 'JOB' in "
                                f"region '{name.split('/')[3]}' in project "
                                f"'{name.split('/')[1]}' does not exist.")
        return job

    def _execution(self, name: str) -> dict[str, Any]:
        execution = self.executions.get(name)
        if execution is None:
            raise ApiError(404, f"Resource '{name.rsplit('/', 1)[-1]}' of kind 'EXECUTION' "
                                "does not exist.")
        return execution

    # ------------------------------------------------------------------ jobs

    def _create_job(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        location = m.group(1)
        job_id = (q.get("jobId") or [""])[0]
        if not _JOB_ID.match(job_id):
            raise ApiError(400, f"Invalid job id '{job_id}': must be 1-63 lowercase letters, "
                                "digits or '-', starting with a letter.")
        name = f"{location}/jobs/{job_id}"
        if name in self.jobs:
            raise ApiError(409, f"Resource '{job_id}' already exists.", "ALREADY_EXISTS")
        labels = body.get("labels") or {}
        for key in labels:
            if key.startswith(("run.googleapis.com", "cloud.googleapis.com")):
                raise ApiError(400, f"The label key '{key}' is reserved.")
        stamp = now()
        job = {**copy.deepcopy(body), "name": name, "uid": str(uuid.uuid4()),
               "generation": "1", "createTime": stamp, "updateTime": stamp,
               "executionCount": 0, "etag": f'"{uuid.uuid4().hex[:8]}"',
               "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"}}
        self.jobs[name] = job
        return 200, self._operation(location, metadata={"@type": T_JOB, **job}, done=False,
                                    complete_on_poll={"@type": T_JOB, **job})

    def _list_jobs(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        prefix = m.group(1) + "/jobs/"
        return 200, {"jobs": [j for n, j in self.jobs.items() if n.startswith(prefix)]}

    def _get_job(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        return 200, self._job(m.group(1))

    def _update_job(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        name = m.group(1)
        job = self._job(name)
        etag = body.get("etag")
        if etag and etag != job.get("etag"):
            raise ApiError(409, "The job was changed by someone else (etag mismatch).",
                           "ABORTED")
        for key in ("labels", "template", "launchStage", "annotations"):
            if key in body:
                job[key] = copy.deepcopy(body[key])
        job["generation"] = str(int(job["generation"]) + 1)
        job["updateTime"] = now()
        job["etag"] = f'"{uuid.uuid4().hex[:8]}"'
        return 200, self._operation(self._location(name), metadata={"@type": T_JOB, **job},
                                    done=False, complete_on_poll={"@type": T_JOB, **job})

    def _delete_job(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        name = m.group(1)
        job = self._job(name)
        del self.jobs[name]
        for execution in [e for e in self.executions if e.startswith(name + "/")]:
            self.executions.pop(execution)
            self.tasks.pop(execution, None)
        return 200, self._operation(self._location(name), metadata={"@type": T_JOB, **job},
                                    done=True, response={"@type": T_JOB, **job})

    def _get_operation(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        op = self.operations.get(m.group(1))
        if op is None:
            raise ApiError(404, f"Operation {m.group(1)} not found.")
        if "_complete_on_poll" in op:
            op.update(done=True, response=op.pop("_complete_on_poll"))
        execution = op.get("_execution")
        if execution in self.executions:
            op["metadata"] = {"@type": T_EXEC, **self.executions[execution]}
        return 200, self._public(op)

    # ------------------------------------------------------------------ executions

    def _run_job(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        job_name = m.group(1)
        job = self._job(job_name)
        image = ((job.get("template") or {}).get("template") or {}).get(
            "containers", [{}])[0].get("image", "")
        if "does-not-exist" in image:  # Cloud Run checks the image before it runs
            raise ApiError(404, f"Image '{image}' not found.")
        overrides = body.get("overrides") or {}
        job_id = job_name.rsplit("/", 1)[-1]
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{job_name}/executions/{job_id}-{suffix}"
        outer = copy.deepcopy(job.get("template") or {})
        template = outer.get("template") or {}
        for override in overrides.get("containerOverrides") or []:
            containers = template.get("containers") or [{}]
            target = next((c for c in containers if c.get("name") == override.get("name")),
                          containers[0])
            if override.get("args") or override.get("clearArgs"):
                target["args"] = list(override.get("args") or [])
            env = {e["name"]: e for e in target.get("env") or []}
            for item in override.get("env") or []:
                env[item["name"]] = item
            target["env"] = list(env.values())
        if overrides.get("timeout"):
            template["timeout"] = overrides["timeout"]
        stamp = now()
        execution = {
            "name": name, "uid": str(uuid.uuid4()), "job": job_id, "generation": "1",
            "labels": copy.deepcopy(outer.get("labels") or {}),
            "createTime": stamp, "updateTime": stamp,
            "taskCount": int(overrides.get("taskCount") or outer.get("taskCount") or 1),
            "parallelism": int(outer.get("parallelism") or 0), "template": template,
            "reconciling": True, "runningCount": 0,
            "conditions": [{"type": "Completed", "state": "CONDITION_PENDING",
                            "lastTransitionTime": stamp},
                           {"type": "ResourcesAvailable", "state": "CONDITION_PENDING"}],
            "logUri": f"https://console.cloud.google.com/logs/viewer?execution={suffix}",
            "etag": f'"{uuid.uuid4().hex[:8]}"'}
        self.executions[name] = execution
        job["executionCount"] = int(job.get("executionCount") or 0) + 1
        job["latestCreatedExecution"] = {"name": name, "createTime": stamp}
        if self.auto_start:
            self._start(name)
        return 200, self._operation(self._location(job_name),
                                    metadata={"@type": T_EXEC, **execution}, done=False,
                                    execution=name)

    def _list_executions(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        job_name = m.group(1)
        self._job(job_name)
        size = int((q.get("pageSize") or ["100"])[0]) or 100
        start = int((q.get("pageToken") or ["0"])[0] or 0)
        items = [e for n, e in self.executions.items() if n.startswith(job_name + "/")]
        items.sort(key=lambda e: e["createTime"], reverse=True)  # newest first
        page = items[start:start + size]
        answer: dict[str, Any] = {"executions": page}
        if start + size < len(items):
            answer["nextPageToken"] = str(start + size)
        return 200, answer

    def _get_execution(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        return 200, self._execution(m.group(1))

    def _list_tasks(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        self._execution(m.group(1))
        return 200, {"tasks": self.tasks.get(m.group(1), [])}

    def _cancel_execution(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        name = m.group(1)
        execution = self._execution(name)
        if execution.get("completionTime"):
            raise ApiError(400, "Execution is already completed and cannot be cancelled.",
                           "FAILED_PRECONDITION")
        stamp = now()
        execution.update(runningCount=0, cancelledCount=execution["taskCount"],
                         completionTime=stamp, reconciling=False, updateTime=stamp,
                         conditions=[{"type": "Completed", "state": "CONDITION_FAILED",
                                      "executionReason": "CANCELLED",
                                      "message": "Execution was cancelled.",
                                      "lastTransitionTime": stamp}])
        self._end_operations(name, error=None)
        return 200, self._operation(self._location(name),
                                    metadata={"@type": T_EXEC, **execution}, done=True,
                                    response={"@type": T_EXEC, **execution})

    def _delete_execution(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        name = m.group(1)
        execution = self._execution(name)
        self.vanish(name)
        return 200, self._operation(self._location(name),
                                    metadata={"@type": T_EXEC, **execution}, done=True,
                                    response={"@type": T_EXEC, **execution})

    def _end_operations(self, name: str, error: dict[str, Any] | None) -> None:
        """The run_job operation of an execution ends when the execution does: a
        response, or an error (a oneof: never both)."""
        execution = self.executions.get(name)
        for op in self.operations.values():
            if op.get("_execution") != name or op.get("done"):
                continue
            op["done"] = True
            if execution is not None:
                op["metadata"] = {"@type": T_EXEC, **execution}
            if error is not None:
                op["error"] = error
            elif execution is not None:
                op["response"] = {"@type": T_EXEC, **execution}

    # ------------------------------------------------------------------ test controls

    def _start(self, name: str) -> None:
        execution = self.executions[name]
        stamp = now()
        execution.update(startTime=stamp, runningCount=execution["taskCount"], updateTime=stamp)
        execution["conditions"] = [
            {"type": "Completed", "state": "CONDITION_PENDING", "lastTransitionTime": stamp},
            {"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED"},
            {"type": "Started", "state": "CONDITION_SUCCEEDED"}]

    def start(self, name: str) -> None:
        with self.server.lock:
            self._start(name)

    def _task(self, name: str, index: int, state: str, result: dict[str, Any]) -> dict[str, Any]:
        execution = self.executions[name]
        short = name.rsplit("/", 1)[-1]
        return {"name": f"{name}/tasks/{short}-task{index}", "index": index,
                "job": execution["job"], "execution": name, "retried": 0,
                "completionTime": now(),
                "conditions": [{"type": "Completed", "state": state}],
                "lastAttemptResult": result}

    def _finish(self, name: str, *, state: str, counts: dict[str, int],
                message: str, tasks: list[dict[str, Any]], error: dict[str, Any] | None,
                reason: str | None = None) -> None:
        execution = self.executions[name]
        stamp = now()
        condition: dict[str, Any] = {"type": "Completed", "state": state,
                                     "lastTransitionTime": stamp}
        if message:
            condition["message"] = message
        if reason:
            condition["executionReason"] = reason
        execution.update(runningCount=0, completionTime=stamp, reconciling=False,
                         updateTime=stamp, **counts)
        execution["conditions"] = [condition] + [
            c for c in execution["conditions"] if c["type"] != "Completed"]
        self.tasks[name] = tasks
        self._end_operations(name, error)

    def succeed(self, name: str) -> None:
        with self.server.lock:
            count = self.executions[name]["taskCount"]
            self._finish(name, state="CONDITION_SUCCEEDED", counts={"succeededCount": count},
                         message="Execution completed successfully.",
                         tasks=[self._task(name, i, "CONDITION_SUCCEEDED", {"exitCode": 0})
                                for i in range(count)], error=None)

    def fail(self, name: str, exit_code: int) -> None:
        with self.server.lock:
            count = self.executions[name]["taskCount"]
            message = f"Task {name.rsplit('/', 1)[-1]}-task0 failed with exit code {exit_code}"
            task = self._task(name, 0, "CONDITION_FAILED", {
                "exitCode": exit_code,
                "status": {"code": 2, "message": f"The container exited with an error "
                                                  f"(exit code {exit_code})."}})
            others = [self._task(name, i, "CONDITION_SUCCEEDED", {"exitCode": 0})
                      for i in range(1, count)]
            self._finish(name, state="CONDITION_FAILED",
                         counts={"failedCount": 1, "succeededCount": count - 1},
                         message=f"Task failed: {message}.", tasks=[task, *others],
                         error={"code": 9, "message": "Task failed"},
                         reason="NON_ZERO_EXIT_CODE")

    def fail_to_start(self, name: str, message: str) -> None:
        """The execution never ran a container (image missing, permission denied)."""
        with self.server.lock:
            count = self.executions[name]["taskCount"]
            task = self._task(name, 0, "CONDITION_FAILED",
                              {"status": {"code": 5, "message": message}})
            self._finish(name, state="CONDITION_FAILED", counts={"failedCount": count},
                         message=message, tasks=[task],
                         error={"code": 9, "message": message})
            for condition in self.executions[name]["conditions"]:
                if condition["type"] == "ResourcesAvailable":
                    condition.update(state="CONDITION_FAILED", message=message,
                                     severity="ERROR")

    def vanish(self, name: str) -> None:
        """Delete the execution as if someone removed it (or its job)."""
        with self.server.lock:
            self.executions.pop(name, None)
            self.tasks.pop(name, None)

    def executions_of(self, run_id: str) -> list[dict[str, Any]]:
        with self.server.lock:
            out = []
            for execution in self.executions.values():
                containers = (execution.get("template") or {}).get("containers") or []
                env = {e.get("name"): e.get("value") for c in containers
                       for e in c.get("env") or []}
                if env.get("PUSHPOOL_RUN_ID") == run_id:
                    out.append(copy.deepcopy(execution))
            return out
