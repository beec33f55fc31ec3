"""ECS adapter benchmark against moto: submits per second, submit -> RUNNING latency, and
AWS calls per run.

moto (behind the test proxy, tests/fakes/ecs_proxy.py) runs in a child process on
127.0.0.1; the real EcsProvider submits through boto3 with its thread pool, task
definition cache and token bucket, while a watcher follows every run the way the
dispatcher's does (dispatcher/engine/watcher.py): ``status_many`` (batched DescribeTasks)
each pass, ``logs`` for each run with a status, ``cleanup`` once it is final. Tasks stop
after a few describes. Every AWS call the adapter makes is counted, per action, and
divided by the runs (target: at most 1.3; RunTask is one). Numbers are moto's, not
AWS's: moto's CPU (~5 ms per RunTask) is the ceiling, and moto reports RUNNING at once.
Usage:

    python bench/ecs_bench.py [--runs 1000] [--concurrency 32]
                              [--rates unlimited,20] [--throttle-every 0]
                              [--watch-interval 0.5]
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

from bench.harness import percentiles, print_summary, print_table, summary_row, write_json
from providers.base import InfraPhase, InfraRef, InfraStatus, JobSpec, RetryableProviderError
from providers.ecs import EcsProvider, EcsSettings
from tests.fakes.moto_ecs import REGION, MotoEcs

CLUSTER = "bench"
# Between watcher passes. The dispatcher polls ECS every 5 s (EcsProvider.poll_interval),
# when a pass at Fargate's 20 RunTask/s sees about 100 new tasks: one DescribeTasks batch.
# A tenth of that keeps the benchmark short and still describes ten times as often.
WATCH_INTERVAL = 0.5
DESCRIBES_PER_STEP = 2  # moto moves a task one step (of four to STOPPED) per this many
CALLS_PER_RUN_TARGET = 1.3
SETUP_ACTIONS = frozenset({"", "CreateCluster"})  # the benchmark's own calls


def spec(server: MotoEcs, run_id: str) -> JobSpec:
    return JobSpec(run_id=run_id, job_name=run_id, image="ghcr.io/example/flows:1",
                   command=["python", "-m", "flows.hello"], env={"PUSHPOOL_RUN_ID": run_id},
                   pool_name="bench", deployment_id="d0",
                   config={"region": REGION, "endpoint_url": server.url, "cluster": CLUSTER,
                           "execution_role_arn": "arn:aws:iam::123456789012:role/bench"})


async def scenario(server: MotoEcs, runs: int, concurrency: int, rate: float | None,
                   throttle_every: int, watch_interval: float = WATCH_INTERVAL
                   ) -> dict[str, Any]:
    server.reset()
    import boto3

    boto3.client("ecs", endpoint_url=server.url, region_name=REGION).create_cluster(
        clusterName=CLUSTER)
    server.set_transition("ecs::task", {"progression": "manual",
                                        "times": DESCRIBES_PER_STEP})
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
    cursors: dict[str, str | None] = {}
    finished: set[str] = set()
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

    async def follow(infra_id: str, status: InfraStatus) -> None:
        """What the dispatcher's watcher does with one run's status: logs, then clean-up."""
        ref = refs[infra_id]
        batch = await provider.logs(ref, cursors.get(infra_id))
        cursors[infra_id] = batch.cursor
        if status.phase.is_final:
            finished.add(infra_id)
            await provider.cleanup(ref)

    async def watch() -> None:
        while not done.is_set() or len(finished) < len(infra):
            following = [i for i in infra if i not in finished]
            if following:
                try:
                    statuses = await provider.status_many([refs[i] for i in following])
                except RetryableProviderError:
                    # moto's threaded server sometimes fails a describe that races a
                    # RunTask (it iterates every stored task); the dispatcher would retry.
                    watch_errors.append(1)
                    statuses = {}
                now = time.perf_counter()
                for infra_id, status in statuses.items():
                    run_id = infra[infra_id]
                    if status.phase is not InfraPhase.PENDING and run_id not in started:
                        started[run_id] = now
                        running_latency.append((now - submitted_at[run_id]) * 1000)
                await asyncio.gather(*(follow(i, st) for i, st in statuses.items()))
            await asyncio.sleep(watch_interval)

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
    actions = {name: counts.get("received", 0)
               for name, counts in server.stats()["actions"].items()
               if name not in SETUP_ACTIONS}
    return {
        "runs": runs, "concurrency": concurrency, "rate_limit": rate,
        "throttle_every": throttle_every, "seconds": elapsed, "submits_per_s": runs / elapsed,
        "submit_ms": percentiles(submit_latency), "submit_to_running_ms":
            percentiles(running_latency),
        "run_task_calls": actions.get("RunTask", 0),
        "register_calls": actions.get("RegisterTaskDefinition", 0),
        "describe_calls": actions.get("DescribeTasks", 0),
        "aws_calls": actions, "aws_calls_per_run": sum(actions.values()) / runs,
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
                                          args.throttle_every, args.watch_interval))
    finally:
        server.stop()
    rows = []
    for r in results:
        submit, running = r["submit_ms"], r["submit_to_running_ms"]
        rows.append([
            "off" if r["rate_limit"] is None else f"{r['rate_limit']:g}/s+100",
            r["runs"], r["submits_per_s"], f"{submit['p50']:.0f} / {submit['p95']:.0f}",
            f"{running['p50']:.0f} / {running['p95']:.0f}", r["run_task_calls"],
            r["register_calls"], f"{r['aws_calls_per_run']:.2f}"])
    print_table(f"ECS adapter against moto ({args.concurrency} concurrent submits)", [
        "bucket", "runs", "submits/s", "submit ms p50/p95", "->RUNNING ms p50/p95",
        "RunTask", "registered", "AWS calls/run"], rows)
    print_table("AWS calls by action (all scenarios)", ["action", "calls"], [
        [name, sum(r["aws_calls"].get(name, 0) for r in results)]
        for name in sorted({n for r in results for n in r["aws_calls"]})])
    worst = max(r["aws_calls_per_run"] for r in results)
    summary = [summary_row("ECS on moto: AWS calls per run (worst scenario)", worst, "calls",
                           f"<= {CALLS_PER_RUN_TARGET}", worst <= CALLS_PER_RUN_TARGET)]
    print_summary("ECS adapter", summary)
    path = write_json("ecs_bench", {"results": results, "watch_interval_s": args.watch_interval,
                                    "summary": summary})
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rates", default="unlimited,20",
                        help="token bucket rates to try, e.g. 'unlimited,20'")
    parser.add_argument("--throttle-every", type=int, default=0,
                        help="answer every Nth RunTask with ThrottlingException")
    parser.add_argument("--watch-interval", type=float, default=WATCH_INTERVAL,
                        help="seconds between watcher passes (status, logs, clean-up)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
