"""Schedule accuracy benchmark: N deployments on a one-minute cron; for each run, the time
its provider submit was called minus its slot time.

A real server runs with the no-op provider and default settings. With ``--setup bulk``
(the default) all deployments but one are written straight into the store and the last
is made through the API, which wakes the scheduler; with ``--setup api`` every one is a
``PUT /api/deployments`` (as `pushpool deploy` does; slow, and timed). The server is left
to finish materialising their runs, then the benchmark waits for the next minute boundary
(at least 10 s away; more with --minutes) and reads each slot's runs from the store and
their submit times from the provider's log.

With ``--passes N`` it measures the scheduler itself instead, in this process and without a
server: the deployments are written straight into a fresh store, then N scheduler passes run
one after another (each a minute of store time later than the one before, so every later
pass has one new slot per deployment to make); each pass's seconds, rows inserted, peak RSS
and the longest event-loop stall during it are reported. Usage:

    python bench/schedule.py [--deployments 1000] [--minutes 1] [--backend sqlite|postgresql]
                             [--setup bulk|api] [--profile] [--server-env NAME=VALUE]
    python bench/schedule.py --passes 3 [--deployments 100000] [--horizon 3600] [--backend ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    RESULTS,
    RawHttp,
    Server,
    database_url_of,
    percentiles,
    postgres_database,
    print_summary,
    print_table,
    running_server,
    server_settings,
    summary_row,
    write_json,
)
from bench.profiling import print_summary as print_profile
from bench.profiling import py_spy, require_py_spy, summarise

POOL = "sched"
CRON = "* * * * *"
TARGET_P99_MS = 100.0
MIN_LEAD_SECONDS = 10.0  # a boundary closer than this is skipped: set-up may still settle


async def make_deployments(server: Server, count: int, database_url: str, bulk: bool
                           ) -> float:
    """``count`` deployments on a one-minute cron; returns the seconds it took."""
    client = RawHttp(server.url, size=8)
    started = time.perf_counter()
    status, body = await client.request("POST", "/api/work-pools",
                                        {"name": POOL, "type": "noop"})
    if status != 201:
        raise RuntimeError(f"creating the pool failed: {status} {body}")
    pending = iter(range(count))
    if bulk:
        pool_id = body["id"]
        _, queues = await client.request("GET", f"/api/work-pools/{POOL}/queues")
        await insert_bulk(database_url, count - 1, pool_id, queues[0]["id"])
        pending = iter([count - 1])  # the last one through the API wakes the scheduler

    async def worker() -> None:
        for i in pending:
            status, body = await client.request("PUT", "/api/deployments", {
                "name": f"every-minute-{i}", "flow_name": POOL, "pool_name": POOL,
                "command": ["true"], "schedules": [{"cron": CRON}]})
            if status not in (200, 201):
                raise RuntimeError(f"deployment {i}: {status} {body}")

    await asyncio.gather(*(worker() for _ in range(8)))
    await client.close()
    return time.perf_counter() - started


async def insert_bulk(database_url: str, count: int, pool_id: str, queue_id: str) -> None:
    from bench.scale_data import insert_deployments
    from dispatcher.store import Database

    db = await Database.connect(database_url, migrate=False)
    try:
        await insert_deployments(db, count, [pool_id], [queue_id], cron=CRON,
                                 prefix="sched-dep-", flow=f"{POOL}-")
    finally:
        await db.close()


def slot_runs(database_url: str, slots: list[datetime]) -> dict[str, datetime]:
    """Run id -> slot time of the scheduled runs of the given slots, read from the store."""
    from sqlalchemy import select

    from dispatcher.store import Database
    from dispatcher.store.tables import runs

    async def read() -> dict[str, datetime]:
        db = await Database.connect(database_url, migrate=False)
        try:
            rows = await db.run(lambda conn: list(conn.execute(
                select(runs.c.id, runs.c.scheduled_time).where(
                    runs.c.scheduled_time.in_(slots), runs.c.auto_scheduled.is_(True)))))
        finally:
            await db.close()
        return {r.id: r.scheduled_time for r in rows}

    return asyncio.run(read())


def next_boundaries(count: int) -> list[datetime]:
    now = datetime.now(UTC)
    first = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if (first - now).total_seconds() < MIN_LEAD_SECONDS:
        first += timedelta(minutes=1)
    return [first + timedelta(minutes=i) for i in range(count)]


@contextlib.contextmanager
def maybe_profile(enabled: bool, server: Server, name: str) -> Any:
    if not enabled:
        yield
        return
    path = RESULTS / f"profile-schedule-{name}.txt"
    with py_spy(server.pid, path):
        yield
    print_profile(f"schedule {name}", summarise(path))


def bench(backend: str, deployments: int, minutes: int, profile: bool, bulk: bool,
          env: dict[str, str]) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database()) if backend == "postgresql" else None
        server = stack.enter_context(running_server(url, **env))
        print(f"  making {deployments} deployments on '{CRON}' ...", flush=True)
        with maybe_profile(profile, server, "setup"):
            setup_seconds = asyncio.run(make_deployments(
                server, deployments, database_url_of(server, url), bulk))
            settle_seconds = server.wait_idle(quiet_seconds=2.0, timeout=600)
        rss_after_setup = server.rss_mb()
        slots = next_boundaries(minutes)
        print(f"  set-up {setup_seconds:.1f}s, settled {settle_seconds:.1f}s later; waiting "
              f"for {', '.join(f'{s:%H:%M:%S}' for s in slots)} UTC ...", flush=True)
        before = server.submit_count()
        deadline = slots[-1].timestamp() + 120
        with maybe_profile(profile, server, "slots"):
            while server.submit_count() < before + deployments * minutes:
                if time.time() > deadline:
                    raise RuntimeError(f"only {server.submit_count() - before} of "
                                       f"{deployments * minutes} slot runs submitted")
                time.sleep(0.2)
        submitted = server.submit_times()
        by_id = slot_runs(database_url_of(server, url), slots)
        cpu = server.cpu_seconds()
    per_slot: list[dict[str, Any]] = []
    late_ms_all: list[float] = []
    for slot in slots:
        ids = [run_id for run_id, when in by_id.items() if when == slot]
        late = [(submitted[i] - slot.timestamp()) * 1000 for i in ids if i in submitted]
        late_ms_all.extend(late)
        per_slot.append({"slot": slot.isoformat(), "runs": len(ids),
                         "submitted": len(late), **percentiles(late),
                         "first_ms": min(late, default=0.0)})
    return {"backend": backend, "deployments": deployments, "cron": CRON, "server_env": env,
            "setup": "bulk" if bulk else "api",
            "setup_seconds": setup_seconds, "settle_seconds": settle_seconds,
            "server_rss_mb_after_setup": rss_after_setup, "server_cpu_seconds": cpu,
            "slots": per_slot, "overall_ms": percentiles(late_ms_all)}


# ---------------------------------------------------------------------------- scheduler passes


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM, so the next peak is this pass's own.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


async def _loop_stall_ms(stop: asyncio.Event) -> float:
    """The longest the event loop went without running this task (10 ms ticks)."""
    worst = 0.0
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        worst = max(worst, (time.perf_counter() - started - 0.01) * 1000)
    return worst


async def measure_passes(database_url: str, deployments: int, passes: int,
                         horizon: float) -> list[dict[str, Any]]:
    from bench.scale_data import insert_deployments, make_pools
    from dispatcher.engine import scheduler as scheduler_module
    from dispatcher.settings import Settings
    from dispatcher.store import Database
    from providers import registry

    registry.register_provider("noop", "bench.noop_provider")
    db = await Database.connect(database_url)
    results: list[dict[str, Any]] = []
    try:
        pool_ids, queue_ids = await make_pools(db, 1, prefix=POOL)
        await insert_deployments(db, deployments, pool_ids, queue_ids, cron=CRON,
                                 prefix="sched-dep-", flow=f"{POOL}-")
        sched = scheduler_module.Scheduler(db, Settings(scheduler_horizon_seconds=horizon),
                                           lambda: None)
        start = datetime.now(UTC)
        for n in range(passes):
            _reset_peak_rss()
            rss_before = _rss_mb("VmRSS")
            stop = asyncio.Event()
            stall = asyncio.create_task(_loop_stall_ms(stop))
            started = time.perf_counter()
            # Each pass a minute later than the one before, by the scheduler's clock.
            inserted = await sched.schedule_once(start + timedelta(minutes=n))
            seconds = time.perf_counter() - started
            stop.set()
            results.append({"pass": n + 1, "seconds": seconds, "inserted": inserted,
                            "rss_before_mb": rss_before, "peak_rss_mb": _rss_mb("VmHWM"),
                            "loop_stall_ms": await stall})
            print(f"  pass {n + 1}: {seconds:.2f}s, {inserted} rows, peak RSS "
                  f"{results[-1]['peak_rss_mb']:.0f} MB (before {rss_before:.0f} MB), "
                  f"longest loop stall {results[-1]['loop_stall_ms']:.0f} ms", flush=True)
    finally:
        await db.close()
    return results


def bench_passes(backend: str, deployments: int, passes: int, horizon: float
                 ) -> list[dict[str, Any]]:
    import tempfile

    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            url = stack.enter_context(postgres_database())
        else:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = f"sqlite+aiosqlite:///{home / 'pushpool.db'}"
        return asyncio.run(measure_passes(url, deployments, passes, horizon))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=1, help="minute boundaries to measure")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--setup", choices=["bulk", "api"], default="bulk",
                        help="write the deployments straight into the store, or PUT each")
    parser.add_argument("--profile", action="store_true",
                        help="record set-up and the slots with py-spy (bench/results/)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a PUSHPOOL_* setting for the server (repeatable)")
    parser.add_argument("--passes", type=int, default=0,
                        help="measure this many scheduler passes in-process instead")
    parser.add_argument("--horizon", type=float, default=3600.0,
                        help="the scheduler's horizon in seconds for --passes (default 3600: "
                             "60 runs per deployment in the first pass)")
    args = parser.parse_args()
    require_py_spy(parser, args.profile)
    if args.passes:
        print(f"timing {args.passes} scheduler pass(es) over {args.deployments} deployments "
              f"on {args.backend} ...", flush=True)
        passes = bench_passes(args.backend, args.deployments, args.passes, args.horizon)
        path = write_json(f"schedule-passes-{args.backend}",
                          {"passes": passes, "args": vars(args)})
        print(f"wrote {path}")
        return
    print(f"benchmarking schedule accuracy on {args.backend} ...", flush=True)
    result = bench(args.backend, args.deployments, args.minutes, args.profile,
                   args.setup == "bulk", server_settings(args.server_env))
    print_table(f"Schedule accuracy: submit time minus slot time (ms), {args.deployments} "
                f"deployments on '{CRON}', {args.backend}",
                ["slot (UTC)", "runs", "submitted", "first", "p50", "p95", "p99", "max"],
                [[s["slot"][11:19], s["runs"], s["submitted"], s["first_ms"], s.get("p50", 0),
                  s.get("p95", 0), s.get("p99", 0), s.get("max", 0)] for s in result["slots"]])
    overall = result["overall_ms"]
    summary = [
        summary_row(f"{args.backend} schedule lateness p99, {args.deployments} deployments",
                    overall.get("p99"), "ms", f"< {TARGET_P99_MS:g} ms",
                    overall.get("p99", 1e9) < TARGET_P99_MS
                    and overall["n"] == args.deployments * args.minutes),
        summary_row(f"{args.backend} schedule set-up and settling, {args.deployments} "
                    f"deployments ({args.setup})",
                    result["setup_seconds"] + result["settle_seconds"], "s"),
    ]
    print_summary("Schedule targets", summary)
    path = write_json(f"schedule-{args.backend}",
                      {**result, "summary": summary, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
