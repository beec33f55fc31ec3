"""Provider benchmark: per adapter, against its emulator, submits per second and submit ->
RUNNING latency, driven the way the dispatcher drives an adapter (a bounded number of
concurrent ``submit`` calls, a watcher polling ``status_many``).

Each adapter adds itself with one entry in ``TARGETS``: an async context manager that
starts its emulator and yields a ``Target`` (the provider, a JobSpec factory, a clean-up);
the cloud adapters with a fake in tests/fakes come from ``bench/cloud_fakes.py``.
Figures are the emulator's, not the cloud's: moto answers RunTask in milliseconds and
reports RUNNING at once; the process provider really starts a supervisor and a child
process per run. Usage:

    python bench/providers.py [--only process,ecs:push] [--runs N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cloud_fakes import CLOUDS, job_spec
from bench.harness import percentiles, print_summary, print_table, summary_row, write_json
from providers.base import InfraPhase, InfraRef, JobSpec, Provider, RetryableProviderError

WATCH_INTERVAL = 0.05


@dataclass
class Target:
    provider: Provider
    make_spec: Callable[[str], JobSpec]
    clean_up: Callable[[list[InfraRef]], Awaitable[None]]  # what submit returned
    runs: int  # defaults that keep this target's run around a minute at most
    concurrency: int
    emulator: str


# ---------------------------------------------------------------------------- targets


@asynccontextmanager
async def process_target() -> AsyncIterator[Target]:
    from providers.process import ProcessProvider

    root = Path(tempfile.mkdtemp(prefix="pushpool-bench-process-"))
    provider = ProcessProvider()

    def make_spec(run_id: str) -> JobSpec:
        return JobSpec(run_id=run_id, job_name=f"bench-{run_id}", image=None,
                       command=["sleep", "1"], env={}, pool_name="bench",
                       config={"working_dir": str(root), "stream_output": False})

    async def clean_up(refs: list[InfraRef]) -> None:
        deadline = time.monotonic() + 60
        waiting = list(refs)
        while waiting and time.monotonic() < deadline:
            statuses = await provider.status_many(waiting)
            waiting = [r for r in waiting if not statuses[r.infra_id].phase.is_final]
            if waiting:
                await asyncio.sleep(0.2)
        for ref in refs:
            await provider.cleanup(ref)

    try:
        yield Target(provider, make_spec, clean_up, runs=50, concurrency=16,
                     emulator="this host (supervisor + `sleep 1` per run)")
    finally:
        await provider.close()
        shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def ecs_target() -> AsyncIterator[Target]:
    import boto3

    from bench.ecs_bench import CLUSTER, spec
    from providers.ecs import EcsProvider, EcsSettings
    from tests.fakes.moto_ecs import REGION, MotoEcs

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ["AWS_DEFAULT_REGION"] = REGION
    server = MotoEcs.start()
    os.environ["AWS_ENDPOINT_URL"] = server.url  # nothing can reach real AWS
    provider = None
    try:
        server.reset()
        boto3.client("ecs", endpoint_url=server.url, region_name=REGION).create_cluster(
            clusterName=CLUSTER)
        # The token bucket off: this measures the adapter, not Fargate's RunTask quota.
        provider = EcsProvider(EcsSettings(run_task_rate=1e9, run_task_burst=1e9,
                                           run_task_min_rate=1e9, max_workers=32,
                                           backoff_base=0.01, backoff_cap=0.2))

        async def clean_up(refs: list[InfraRef]) -> None:
            return None  # moto's state goes with its process

        yield Target(provider, lambda run_id: spec(server, run_id), clean_up, runs=300,
                     concurrency=32, emulator="moto behind tests/fakes/ecs_proxy.py")
    finally:
        if provider is not None:
            await provider.close()
        server.stop()
        os.environ.pop("AWS_ENDPOINT_URL", None)


@asynccontextmanager
async def fake_cloud_target(pool_type: str) -> AsyncIterator[Target]:
    """A cloud adapter (Cloud Run, ACI, Modal) against its fake, started in this process,
    with the adapter's own rate limits raised (``bench/cloud_fakes.py``): this measures the
    adapter, not the cloud's quota. Executions, groups and sandboxes run at once: the
    figures are the adapter's and the fake's, not the time a cloud takes to start a job."""
    cloud = CLOUDS[pool_type]
    print(f"    {cloud.describe_limits()}", flush=True)
    fake = cloud.start()
    provider = cloud.make_provider(cloud.limits)

    async def clean_up(refs: list[InfraRef]) -> None:
        cloud.start()  # a reset fake

    try:
        yield Target(provider, lambda run_id: job_spec(cloud, fake, run_id), clean_up,
                     runs=300, concurrency=32, emulator=cloud.emulator)
    finally:
        await provider.close()


# One entry per adapter: pool type -> its emulator set-up.
TARGETS: dict[str, Callable[[], AbstractAsyncContextManager[Target]]] = {
    "process": process_target,
    "ecs:push": ecs_target,
    **{pool_type: partial(fake_cloud_target, pool_type) for pool_type in CLOUDS},
}


# ---------------------------------------------------------------------------- measuring


async def measure(target: Target, runs: int, concurrency: int) -> dict[str, Any]:
    provider = target.provider
    limit = asyncio.Semaphore(concurrency)
    started_at: dict[str, float] = {}
    submit_ms: list[float] = []
    running_ms: list[float] = []
    infra: dict[str, str] = {}  # infra id -> run id
    refs: dict[str, InfraRef] = {}  # infra id -> what submit returned
    seen: set[str] = set()
    retries = 0
    done = asyncio.Event()

    async def submit(run_id: str) -> None:
        nonlocal retries
        async with limit:
            t0 = time.perf_counter()
            started_at[run_id] = t0
            for _ in range(50):  # the dispatcher's retry, in small
                try:
                    submission = await provider.submit(target.make_spec(run_id))
                    break
                except RetryableProviderError:
                    retries += 1
                    await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"{run_id} was never accepted")
            submit_ms.append((time.perf_counter() - t0) * 1000)
            infra[submission.infra_id] = run_id
            refs[submission.infra_id] = submission

    async def watch() -> None:
        while not done.is_set() or len(seen) < len(infra):
            waiting = [i for i in infra if i not in seen]
            if waiting:
                try:
                    statuses = await provider.status_many([refs[i] for i in waiting])
                except RetryableProviderError:
                    statuses = {}  # the dispatcher's watcher would poll again
                now = time.perf_counter()
                for infra_id, status in statuses.items():
                    if status.phase is not InfraPhase.PENDING and infra_id not in seen:
                        seen.add(infra_id)
                        running_ms.append((now - started_at[infra[infra_id]]) * 1000)
            await asyncio.sleep(WATCH_INTERVAL)

    # One submit first, not counted: client sessions, task definitions and the like are
    # made once per process, and that cost is its own figure.
    await submit(f"warm{uuid.uuid4().hex[:12]}")
    first_submit_ms = submit_ms.pop()
    warm = [refs[i] for i in infra]
    infra.clear()
    watcher = asyncio.create_task(watch())
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(submit(f"r{uuid.uuid4().hex[:12]}") for _ in range(runs)))
        elapsed = time.perf_counter() - t0
        done.set()
        await asyncio.wait_for(watcher, timeout=120)
    finally:
        watcher.cancel()
    await target.clean_up([refs[i] for i in infra] + warm)
    return {"runs": runs, "concurrency": concurrency, "seconds": elapsed,
            "first_submit_ms": first_submit_ms,
            "submits_per_second": runs / elapsed, "retries": retries,
            "submit_ms": percentiles(submit_ms), "submit_to_running_ms": percentiles(running_ms)}


async def bench(only: list[str], runs: int | None, concurrency: int | None
                ) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for pool_type in only:
        print(f"  {pool_type} ...", flush=True)
        async with TARGETS[pool_type]() as target:
            n, c = runs or target.runs, concurrency or target.concurrency
            results[pool_type] = {"emulator": target.emulator, **await measure(target, n, c)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(TARGETS),
                        help=f"pool types, comma-separated (of {', '.join(TARGETS)})")
    parser.add_argument("--runs", type=int, default=None, help="runs per provider")
    parser.add_argument("--concurrency", type=int, default=None, help="submits in flight")
    args = parser.parse_args()
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in only if t not in TARGETS]
    if unknown:
        parser.error(f"--only: unknown pool type(s) {unknown}; choose from {list(TARGETS)}")
    print("benchmarking providers against their emulators ...", flush=True)
    results = asyncio.run(bench(only, args.runs, args.concurrency))
    print_table("Providers against their emulators", [
        "pool type", "runs", "in flight", "submits/s", "first submit ms", "submit ms p50",
        "submit ms p95", "-> RUNNING ms p50", "-> RUNNING ms p95", "emulator"],
        [[t, r["runs"], r["concurrency"], r["submits_per_second"], r["first_submit_ms"],
          r["submit_ms"]["p50"],
          r["submit_ms"]["p95"], r["submit_to_running_ms"].get("p50", "-"),
          r["submit_to_running_ms"].get("p95", "-"), r["emulator"]]
         for t, r in results.items()])
    summary = []
    for t, r in results.items():
        summary.append(summary_row(f"{t} submits/s (emulator)", r["submits_per_second"], "/s"))
        summary.append(summary_row(f"{t} submit -> RUNNING p95 (emulator)",
                                   r["submit_to_running_ms"].get("p95"), "ms"))
    print_summary("Provider figures", summary)
    path = write_json("providers", {"results": results, "summary": summary,
                                    "watch_interval_s": WATCH_INTERVAL, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
