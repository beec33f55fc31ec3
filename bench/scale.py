"""Scale benchmark: a store holding 100,000 deployments with schedules and 1,000,000 runs
(bench/scale_data.py loads them by bulk SQL), measured through the real code paths:

- the claim transaction (``store.claim_due_runs``), with due runs and with nothing due,
  and the dispatcher's other per-pass reads (``next_wakeup``, ``runs_to_watch``);
- a real server process on that store: time to answer, time until its start-up passes
  (scheduler, watcher) are done, its CPU use after that, and its RSS (now and peak);
- ``GET /api/runs`` first pages (what `pushpool run ls` shows), plain and filtered, and
  the `pushpool run ls` command itself, wall clock;
- the web console's pages (dashboard, pools, a pool, a deployment, runs, a run).

Usage:

    python bench/scale.py [--deployments 100000] [--runs 1000000]
                          [--backend sqlite|postgresql] [--profile] [--db-file PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    RESULTS,
    RawHttp,
    percentiles,
    postgres_database,
    print_summary,
    print_table,
    start_server,
    stop_server,
    summary_row,
    write_json,
)
from bench.profiling import print_summary as print_profile
from bench.profiling import py_spy, require_py_spy, summarise
from bench.scale_data import Shape, counts, load

CLAIM_TARGET_MS = 10.0
LIST_TARGET_MS = 100.0
CONSOLE_TARGET_MS = 200.0
RSS_TARGET_MB = 250.0
OWNER = "scale-bench"
CLAIM_BATCH = 200


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[list[float], Any]:
    """Milliseconds of each of ``repeat`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, result


async def set_pool_limits(db: Any, limit: int | None) -> None:
    from sqlalchemy import update

    from dispatcher.store.tables import work_pools

    await db.run(lambda conn: conn.execute(
        update(work_pools).values(concurrency_limit=limit)), write=True)


async def claim_one_at_a_time(db: Any, claimed_ids: list[str], repeat: int = 20
                               ) -> list[float]:
    """Milliseconds of ``repeat`` claims that each find one due run: before each, one of
    ``claimed_ids`` is handed back (SCHEDULED and due again)."""
    from dispatcher import store

    times = []
    for run_id in claimed_ids[:repeat]:
        await store.release_claims(db, OWNER, [run_id], "handed back by the scale benchmark")
        t0 = time.perf_counter()
        claimed = await store.claim_due_runs(db, OWNER, limit=CLAIM_BATCH, lease_seconds=600)
        times.append((time.perf_counter() - t0) * 1000)
        if [r.run_id for r in claimed] != [run_id]:
            raise RuntimeError(f"expected to claim {run_id}, claimed {len(claimed)} run(s)")
    return times


async def store_phase(url: str, shape: Shape, reuse: bool) -> dict[str, Any]:
    """Load the data (unless ``reuse``), then time the engine's queries in this process
    (the server is not running yet, so nothing competes with them)."""
    from dispatcher import store
    from providers import registry

    registry.register_provider("noop", "bench.noop_provider")
    db = await store.Database.connect(url)
    try:
        t0 = time.perf_counter()
        load_timings = {} if reuse else await load(db, shape)
        load_seconds = time.perf_counter() - t0
        stored = await counts(db)
        print(f"  loaded {stored} in {load_seconds:.1f}s", flush=True)
        ops: dict[str, Any] = {}

        async def claim_batch() -> Any:
            return await store.claim_due_runs(db, OWNER, limit=CLAIM_BATCH, lease_seconds=600)

        # A backlog first: each call claims the next batch of 200 (the first call, which
        # compiles the claim's statements once per process, is left out).
        claimed_ids = [r.run_id for r in await claim_batch()]
        batch_ms: list[float] = []
        while True:
            t0 = time.perf_counter()
            claimed = await claim_batch()
            if not claimed:
                break
            batch_ms.append((time.perf_counter() - t0) * 1000)
            claimed_ids.extend(r.run_id for r in claimed)
        ops["claim, 200 due runs per call"] = percentiles(batch_ms)
        ops["claim, nothing due"] = percentiles((await timed(claim_batch, 20))[0])
        # The event-driven case: one run is due (one of the claimed, handed back) and the
        # dispatcher claims with its usual batch limit, as the server does. The thousand
        # claimed runs stay in hand, as a busy dispatcher's would.
        ops["claim, one due run"] = percentiles(await claim_one_at_a_time(db, claimed_ids))
        # The same with a concurrency limit on every pool: the claim ranks the due runs
        # against the free slots (informational; the target is the row above).
        await set_pool_limits(db, 1_000_000)
        ops["claim, one due run, pools with a limit"] = percentiles(
            await claim_one_at_a_time(db, claimed_ids))
        await set_pool_limits(db, None)
        ops["next_wakeup"] = percentiles((await timed(lambda: store.next_wakeup(db), 20))[0])
        ops["runs_to_watch (500)"] = percentiles((await timed(
            lambda: store.runs_to_watch(db, limit=500), 20))[0])
        # Hand the claimed runs back so the server starts from a plain store.
        await store.release_claims(db, OWNER, claimed_ids, "released by the scale benchmark")
        return {"load_seconds": load_seconds, "load_steps": load_timings, "stored": stored,
                "claimed": len(claimed_ids), "ops_ms": ops}
    finally:
        await db.close()


async def list_pages(url: str, repeat: int) -> dict[str, Any]:
    client = RawHttp(url, size=1)
    queries = {"run ls (first page)": "/api/runs",
               "run ls --state FAILED": "/api/runs?state=FAILED",
               "run ls --pool pool-3": "/api/runs?pool=pool-3",
               "run ls --deployment flow-7/dep-777": "/api/runs?deployment=flow-7/dep-777",
               "run ls --state SCHEDULED --limit 200": "/api/runs?state=SCHEDULED&limit=200"}
    out: dict[str, Any] = {}
    try:
        for name, path in queries.items():
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                status, body = await client.request("GET", path)
                times.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status} {body}")
            out[name] = {**percentiles(times), "items": len(body)}
    finally:
        await client.close()
    return out


def console_pages(url: str, repeat: int) -> dict[str, Any]:
    """Each console page, whole HTML answer, over one kept-alive connection."""
    import httpx

    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        some_run = client.get("/api/runs?limit=1").json()[0]["id"]
        pages = {"dashboard /": "/", "work pools": "/pools", "a pool": "/pools/pool-3",
                 "a deployment": "/deployments/flow-7/dep-777", "runs": "/runs",
                 "runs, state FAILED": "/runs?state=FAILED", "a run": f"/runs/{some_run}"}
        for name, path in pages.items():
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                if answer.status_code != 200:
                    raise RuntimeError(f"GET {path}: {answer.status_code}")
            out[name] = {**percentiles(times), "bytes": len(answer.content)}
    return out


def cli_run_ls(url: str, repeat: int = 3) -> dict[str, float]:
    exe = Path(sys.executable).with_name("pushpool")
    env = {**os.environ, "PUSHPOOL_API_URL": url}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "run", "ls"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000)
    return percentiles(times)


def server_phase(url: str, profile: bool, window: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="pushpool-scale-server-"))
    t0 = time.perf_counter()
    server = start_server(url, home=home)
    try:
        answered = time.perf_counter() - t0
        ctx = (py_spy(server.pid, RESULTS / "profile-scale-server.txt") if profile
               else contextlib.nullcontext())
        with ctx:
            try:
                settled: float | None = server.wait_idle(quiet_seconds=2.0, timeout=window)
            except RuntimeError:
                settled = None  # still busy when the window closed
            # CPU over a quiet-time window: what the server costs when nothing is due.
            cpu0, w0 = server.cpu_seconds(), time.perf_counter()
            rss_samples = []
            while time.perf_counter() - w0 < 10:
                rss_samples.append(server.rss_mb())
                time.sleep(0.5)
            busy = (server.cpu_seconds() - cpu0) / (time.perf_counter() - w0)
            pages = asyncio.run(list_pages(server.url, 10))
            cli = cli_run_ls(server.url)
            console = console_pages(server.url, 10)
        if profile:
            print_profile("scale server", summarise(RESULTS / "profile-scale-server.txt"))
        return {"answered_s": answered, "settled_s": settled, "cpu_share_after": busy,
                "rss_mb": max(rss_samples), "peak_rss_mb": server.peak_rss_mb(),
                "api_ms": pages, "cli_run_ls_ms": cli, "console_ms": console,
                "server_log": server.log_tail(2000)}
    finally:
        stop_server(server)


def bench(backend: str, shape: Shape, profile: bool, window: float,
          db_file: Path | None) -> dict[str, Any]:
    reuse = False
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            url = stack.enter_context(postgres_database())
        elif db_file is not None:
            reuse = db_file.exists()
            url = f"sqlite+aiosqlite:///{db_file.absolute()}"
        else:
            folder = tempfile.mkdtemp(prefix="pushpool-scale-")
            stack.callback(shutil.rmtree, folder, True)
            url = f"sqlite+aiosqlite:///{folder}/scale.db"
        print(f"  {'reusing' if reuse else 'loading'} {shape.deployments:,} deployments and "
              f"{shape.runs:,} runs in {backend} ...", flush=True)
        stored = asyncio.run(store_phase(url, shape, reuse))
        print("  starting a server on it ...", flush=True)
        served = server_phase(url, profile, window)
    return {"backend": backend, "shape": shape.__dict__, **stored, "server": served}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--window", type=float, default=240.0,
                        help="seconds to wait for the server's start-up passes to finish")
    parser.add_argument("--profile", action="store_true",
                        help="record the server with py-spy (bench/results/)")
    parser.add_argument("--db-file", type=Path, default=None,
                        help="SQLite only: keep the store in this file, and reuse it if it "
                             "exists (for looking into a result; delete it yourself)")
    args = parser.parse_args()
    require_py_spy(parser, args.profile)
    if args.db_file and args.backend != "sqlite":
        parser.error("--db-file: only with --backend sqlite")
    shape = Shape(deployments=args.deployments, runs=args.runs)
    print(f"benchmarking scale on {args.backend} ...", flush=True)
    r = bench(args.backend, shape, args.profile, args.window, args.db_file)
    ops = r["ops_ms"]
    print_table(f"Store queries at scale ({args.backend}, {r['stored']['runs']:,} runs, "
                f"{r['stored']['deployments']:,} deployments), ms",
                ["query", "calls", "p50", "p95", "p99", "max"],
                [[name, o["n"], o.get("p50", 0), o.get("p95", 0), o.get("p99", 0),
                  o.get("max", 0)] for name, o in ops.items()])
    server = r["server"]
    api = server["api_ms"]
    print_table("API at scale (ms, 10 calls each)", ["request", "items", "p50", "p99", "max"],
                [[name, o["items"], o["p50"], o["p99"], o["max"]] for name, o in api.items()]
                + [["pushpool run ls (whole command)", "", server["cli_run_ls_ms"]["p50"],
                    server["cli_run_ls_ms"]["p99"], server["cli_run_ls_ms"]["max"]]])
    console = server["console_ms"]
    print_table("Console pages at scale (ms, 10 calls each)", ["page", "bytes", "p50", "p99",
                                                              "max"],
                [[name, o["bytes"], o["p50"], o["p99"], o["max"]] for name, o in console.items()])
    slowest_page = max(o["p99"] for o in console.values())
    settled = server["settled_s"]
    print_table("Server at scale", ["measure", "value"], [
        ["answered /api/health after (s)", server["answered_s"]],
        ["start-up passes done after (s)",
         "still busy after the window" if settled is None else settled],
        ["CPU after that (share of one core)", f"{server['cpu_share_after']:.0%}"],
        ["RSS (MB)", server["rss_mb"]], ["peak RSS (MB)", server["peak_rss_mb"]]])
    idle_claim = ops["claim, nothing due"].get("p99", 1e9)
    one_claim = ops["claim, one due run"].get("p99", 1e9)
    batch_claim = ops["claim, 200 due runs per call"].get("p99", 1e9)
    first_page = api["run ls (first page)"]["p99"]
    summary = [
        summary_row(f"{args.backend} claim p99, nothing due", idle_claim, "ms",
                    f"< {CLAIM_TARGET_MS:g} ms", idle_claim < CLAIM_TARGET_MS),
        summary_row(f"{args.backend} claim p99, one due run", one_claim, "ms",
                    f"< {CLAIM_TARGET_MS:g} ms", one_claim < CLAIM_TARGET_MS),
        # A backlog's batch writes 200 rows and their history rows: shown, not a target.
        summary_row(f"{args.backend} claim p99, 200 claimed per call", batch_claim, "ms"),
        summary_row(f"{args.backend} run ls first page p99 (API)", first_page, "ms",
                    f"< {LIST_TARGET_MS:g} ms", first_page < LIST_TARGET_MS),
        summary_row(f"{args.backend} slowest console page p99", slowest_page, "ms",
                    f"< {CONSOLE_TARGET_MS:g} ms", slowest_page < CONSOLE_TARGET_MS),
        summary_row(f"{args.backend} server peak RSS", server["peak_rss_mb"], "MB",
                    f"< {RSS_TARGET_MB:g} MB", server["peak_rss_mb"] < RSS_TARGET_MB),
        summary_row(f"{args.backend} server CPU with nothing due",
                    100 * server["cpu_share_after"], "% of a core"),
    ]
    print_summary(f"Scale targets ({r['stored']['deployments']:,} deployments, "
                  f"{r['stored']['runs']:,} runs)", summary)
    path = write_json(f"scale-{args.backend}", {**r, "summary": summary, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
