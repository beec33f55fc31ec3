"""Start the ECS proxy in front of moto (``ecs_proxy.py``) in a child process; drive it.

``MotoEcs.start()`` runs the server on a free 127.0.0.1 port with
MOTO_IAM_LOAD_MANAGED_POLICIES=true and returns once it answers. Its methods wrap the
proxy's test API (faults, task outcomes, stats) and moto's own (/moto-api/reset, the
state manager). A separate process keeps moto's CPU off the test process's GIL.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

PROXY_SCRIPT = Path(__file__).with_name("ecs_proxy.py")
REGION = "us-east-1"
ACCOUNT = "123456789012"
# Tasks stay where the test puts them: moto advances a task one step per N describes.
STILL = {"progression": "manual", "times": 1_000_000}
PER_TEST_SERVICES = ("ecs", "logs", "events", "sqs")


class MotoEcs:
    def __init__(self, process: subprocess.Popen[str], port: int):
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, timeout: float = 60.0) -> MotoEcs:
        env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
               "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION, "PYTHONUNBUFFERED": "1"}
        env.pop("AWS_ENDPOINT_URL", None)
        process = subprocess.Popen([sys.executable, str(PROXY_SCRIPT), "--port", "0"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True, env=env)
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                line = process.stdout.readline()
                if line.startswith("READY") or not line:
                    break
            if process.poll() is not None:
                break
        if not line.startswith("READY"):
            process.kill()
            raise RuntimeError(f"the ECS proxy did not start (exit {process.poll()})")
        return cls(process, int(line.split()[1]))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    # ------------------------------------------------------------------ HTTP

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def reset(self, services: tuple[str, ...] = PER_TEST_SERVICES) -> None:
        """Fresh ECS (and logs, events, SQS) state, no faults, no counts; tasks keep their
        status until told. EC2, IAM and ECR live on (their reset costs seconds): tests
        that make resources there use names of their own."""
        self.request("POST", "/_fake/reset", {"services": list(services)})
        self.set_transition("ecs::task", STILL)

    def reset_everything(self) -> None:
        self.request("POST", "/moto-api/reset")
        self.reset()

    def set_transition(self, model: str, transition: dict[str, Any]) -> None:
        self.request("POST", "/moto-api/state-manager/set-transition",
                     {"model_name": model, "transition": transition})

    def add_fault(self, action: str, kind: str, every: int = 1, times: int | None = None,
                  **extra: Any) -> None:
        self.request("POST", "/_fake/faults", {"action": action, "kind": kind,
                                              "every": every, "times": times, **extra})

    def clear_faults(self) -> None:
        self.request("DELETE", "/_fake/faults")

    def set_outcome(self, task: str, **fields: Any) -> None:
        self.request("POST", "/_fake/tasks/outcome", {"task": task, **fields})

    def forget_task(self, task: str) -> None:
        self.request("POST", "/_fake/tasks/forget", {"task": task})

    def stats(self) -> dict[str, Any]:
        return self.request("GET", "/_fake/stats")

    def calls(self, action: str, what: str = "received") -> int:
        return int(self.stats()["actions"].get(action, {}).get(what, 0))

    def run_tasks(self) -> list[dict[str, Any]]:
        return list(self.stats()["run_tasks"])
