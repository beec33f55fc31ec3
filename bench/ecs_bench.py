"""ECS adapter benchmark against moto: submits per second and submit -> RUNNING latency.

moto (behind the test proxy, tests/fakes/ecs_proxy.py) runs in a child process on
127.0.0.1; the real EcsProvider submits through boto3 with its thread pool, task
definition cache and token bucket, while a watcher polls ``status_many`` (batched
DescribeTasks) the way the dispatcher does. Numbers are moto's, not AWS's: moto's CPU
(~5 ms per RunTask) is the ceiling, and moto reports RUNNING at once. Usage:

    python bench/ecs_bench.py [--runs 1000] [--concurrency 32]
                              [--rates unlimited,20] [--throttle-every 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import percentiles, print_table, write_json
from providers.base import InfraPhase, InfraRef, JobSpec, RetryableProviderError
from providers.ecs import EcsProvider, EcsSettings
from tests.fakes.moto_ecs import REGION, MotoEcs

CLUSTER = "bench"
WATCH_INTERVAL = 0.05


def spec(server: MotoEcs, run_id: str) -> JobSpec:
    return JobSpec(run_id=run_id, job_name=run_id, image="ghcr.io/example/flows:1",
                   command=["python", "-m", "flows.hello"], env={"PUSHPOOL_RUN_ID": run_id},
                   pool_name="bench", deployment_id="d0",
                   config={"region": REGION, "endpoint_url": server.url, "cluster": CLUSTER,
                           "execution_role_arn": "arn:aws:iam::123456789012:role/bench"})


async def scenario(server: MotoEcs, runs: int, concurrency: int, rate: float | None,
                   throttle_every: int) -> dict[str, Any]:
    server.reset()
    import boto3

    boto3.client("ecs", endpoint_url=server.url, region_name=REGION).create_cluster(
        clusterName=CLUSTER)
    if throttle_every:
        server.add_fault("RunTask", "throttle", every=throttle_every)
    settings = EcsSettings(run_task_rate=rate or 1e9, run_task_burst=100 if rate else 1e9,
                           run_task_min_rate=(rate or 1e9) / 4, max_workers=concurrency,
                           backoff_base=0.01, backoff_cap=0.2)
    provider = EcsProvider(settings)
    submitted_at: dict[str, float] = {}
    started: dict[str, float] = {}
    submit_latency: list[float] = []
    running_latency: list[float] = []
    infra: dict[str, str] = {}
    refs: dict[str, InfraRef] = {}
    watch_errors: list[int] = []
    done = asyncio.Event()
    limit = asyncio.Semaphore(concurrency)

    async def submit(run_id: str) -> None:
        async with limit:
            t0 = time.perf_counter()
            submitted_at[run_id] = t0
            for _ in range(50):  # the dispatcher's retry, in small
                try:
                    submission = await provider.submit(spec(server, run_id))
                    break
                except RetryableProviderError:
                    await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"{run_id} never submitted")
            submit_latency.append((time.perf_counter() - t0) * 1000)
            infra[submission.infra_id] = run_id
            refs[submission.infra_id] = submission

    async def watch() -> None:
        while not done.is_set() or len(started) < len(infra):
            waiting = [i for i, r in infra.items() if r not in started]
            if waiting:
                try:
                    statuses = await provider.status_many([refs[i] for i in waiting])
                except RetryableProviderError:
                    # moto's threaded server sometimes fails a describe that races a
                    # RunTask (it iterates every stored task); the dispatcher would retry.
                    watch_errors.append(1)
                    statuses = {}
                now = time.perf_counter()
                for infra_id, status in statuses.items():
                    if status.phase in (InfraPhase.RUNNING, InfraPhase.SUCCEEDED):
                        run_id = infra[infra_id]
                        started[run_id] = now
                        running_latency.append((now - submitted_at[run_id]) * 1000)
            await asyncio.sleep(WATCH_INTERVAL)

    watcher = asyncio.create_task(watch())
    t_start = time.perf_counter()
    try:
        await asyncio.gather(*(submit(f"run-{uuid.uuid4().hex[:12]}") for _ in range(runs)))
        elapsed = time.perf_counter() - t_start
        done.set()
        await asyncio.wait_for(watcher, timeout=120)
        bucket = provider.rate_limiter(REGION, spec(server, "x").config)
    finally:
        watcher.cancel()
        await provider.close()
    stats = server.stats()
    return {
        "runs": runs, "concurrency": concurrency, "rate_limit": rate,
        "throttle_every": throttle_every, "seconds": elapsed, "submits_per_s": runs / elapsed,
        "submit_ms": percentiles(submit_latency), "submit_to_running_ms":
            percentiles(running_latency),
        "run_task_calls": stats["actions"].get("RunTask", {}).get("received", 0),
        "register_calls": stats["actions"].get("RegisterTaskDefinition", {}).get("received", 0),
        "describe_calls": stats["actions"].get("DescribeTasks", {}).get("received", 0),
        "throttles": bucket.throttles, "lowest_rate": bucket.lowest_rate,
        "status_errors": len(watch_errors),
    }


async def main_async(args: argparse.Namespace) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ["AWS_DEFAULT_REGION"] = REGION
    server = MotoEcs.start()
    os.environ["AWS_ENDPOINT_URL"] = server.url  # nothing can reach real AWS
    results = []
    try:
        for rate_text in args.rates.split(","):
            rate = None if rate_text.strip() in ("unlimited", "none", "0") else float(rate_text)
            runs = args.runs if rate is None else min(args.runs, int(100 + rate * 10))
            results.append(await scenario(server, runs, args.concurrency, rate,
                                          args.throttle_every))
    finally:
        server.stop()
    rows = []
    for r in results:
        submit, running = r["submit_ms"], r["submit_to_running_ms"]
        rows.append([
            "off" if r["rate_limit"] is None else f"{r['rate_limit']:g}/s+100",
            r["runs"], r["submits_per_s"], f"{submit['p50']:.0f} / {submit['p95']:.0f}",
            f"{running['p50']:.0f} / {running['p95']:.0f}", r["run_task_calls"],
            r["register_calls"]])
    print_table(f"ECS adapter against moto ({args.concurrency} concurrent submits)", [
        "bucket", "runs", "submits/s", "submit ms p50/p95", "->RUNNING ms p50/p95",
        "RunTask", "registered"], rows)
    path = write_json("ecs_bench", {"results": results, "watch_interval_s": WATCH_INTERVAL})
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rates", default="unlimited,20",
                        help="token bucket rates to try, e.g. 'unlimited,20'")
    parser.add_argument("--throttle-every", type=int, default=0,
                        help="answer every Nth RunTask with ThrottlingException")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
