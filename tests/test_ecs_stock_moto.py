"""An ecs:push pool against stock moto (``python -m moto.server``), as a user would try it.

The other ECS tests run moto behind ``tests/fakes/ecs_proxy.py``, which patches a moto bug
(RunTask answers 500 for a Fargate definition with memory set at task level only). Here
nothing is patched or proxied: what pushpool registers and sends must work as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from providers.base import InfraPhase, JobSpec
from providers.ecs import EcsProvider
from providers.ecs.adapter import CANCEL_REASON
from tests.conftest import wait_for
from tests.fakes.ecs_testing import EXECUTION_ROLE, REGION, fast_settings
from tests.fakes.pushpool_server import free_port

START_DEADLINE_SECONDS = 60.0
CLUSTER = "stock"


@pytest.fixture(scope="module")
def stock_moto() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION}
    env.pop("AWS_ENDPOINT_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                "-p", str(port)], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    ecs = boto3.client("ecs", endpoint_url=url, region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing",
                       config=Config(retries={"total_max_attempts": 1}))
    try:
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while True:  # a readiness check: moto answers once it listens
            try:
                ecs.create_cluster(clusterName=CLUSTER)
                break
            except EndpointConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("stock moto did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def spec(url: str, run_id: str) -> JobSpec:
    return JobSpec(run_id=run_id, job_name=f"job-{run_id}", image="ghcr.io/example/flows:1",
                   command=["python", "-m", "flows.hello"], env={"PUSHPOOL_RUN_ID": run_id},
                   pool_name="stock-pool", config={
                       "region": REGION, "endpoint_url": url, "cluster": CLUSTER,
                       "execution_role_arn": EXECUTION_ROLE})


async def test_a_run_goes_through_stock_moto(stock_moto: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", stock_moto)  # a client without one: still moto
    provider = EcsProvider(fast_settings(submit_attempts=1))
    try:
        ref = await provider.submit(spec(stock_moto, "stock-1"))
        assert ":task/" in ref.infra_id

        async def finished() -> bool:
            return (await provider.status(ref)).phase.is_final

        # Stock moto moves a task one step per DescribeTasks, to STOPPED with exit 0.
        await wait_for(finished, timeout=30, what="the task to stop")
        final = await provider.status(ref)
        assert (final.phase, final.exit_code) == (InfraPhase.SUCCEEDED, 0)

        second = await provider.submit(spec(stock_moto, "stock-2"))
        await provider.cancel(second)
        # Stock moto sets no stopCode (AWS: UserInitiated), so read what StopTask did.
        task_arn = second.infra_id.rsplit("::", 1)[-1]
        ecs = boto3.client("ecs", endpoint_url=stock_moto, region_name=REGION)
        [task] = ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn])["tasks"]
        assert (task["lastStatus"], task["stoppedReason"]) == ("STOPPED", CANCEL_REASON)
        assert provider.task_definitions.registered == 1  # one definition for both runs
    finally:
        await provider.close()
