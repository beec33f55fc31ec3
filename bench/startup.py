"""Start-up benchmark: `pushpool --help` wall time, the import time of each provider
adapter (every pool type in providers.registry.KNOWN_PROVIDERS, so a new adapter is
measured as soon as it is registered), a server's time from start to answering, each
cloud-function handler's cold import, and the Lambda handler's first event, a tick with
nothing due on a PostgreSQL database of its own (on PUSHPOOL_BENCH_POSTGRES_URL's
server): answered by the idle probe (one asyncpg read, dispatcher/engine/idle_probe.py),
and for comparison with the probe off (the full pass: SQLAlchemy, the store and the
engine loaded), with the modules each loaded: how many, the cloud SDKs among them (none)
and those a tick does not need (none: no aiohttp, API, jsonschema, prometheus-client or
Alembic).

Each measurement runs in a fresh interpreter. Adapter imports are timed twice: cold (the
adapter and everything under it) and on top of what the dispatcher has already imported
(providers.base, pydantic), which is what a server pays the first time a pool of that
type is used. Usage:

    python bench/startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    ROOT,
    percentiles,
    postgres_database,
    print_summary,
    print_table,
    start_server,
    stop_server,
    summary_row,
    write_json,
)

HELP_TARGET_MS = 300.0
PUSHPOOL = Path(sys.executable).with_name("pushpool")

IMPORT_PROBE = """
import importlib, json, sys, time
module, before = sys.argv[1], sys.argv[2]
if before == "warm":
    import providers.base  # noqa: F401
elif before != "cold":
    importlib.import_module(before)  # what the platform loads before the handler
t0 = time.perf_counter()
try:
    importlib.import_module(module)
except ImportError as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
else:
    print(json.dumps({"ms": (time.perf_counter() - t0) * 1000,
                      "modules": len(sys.modules)}))
"""


def wall_ms(argv: list[str], repeat: int, env: dict[str, str] | None = None) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env, cwd=str(ROOT))
        times.append((time.perf_counter() - t0) * 1000)
    return times


def heaviest_imports(argv_tail: list[str], top: int = 10) -> list[tuple[str, float]]:
    """The largest cumulative import times under ``python -X importtime``, for modules
    imported at the top level or one level down (the root command itself included)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv_tail], cwd=str(ROOT),
                          capture_output=True, text=True, check=False)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
            continue
        name = parts[2].rstrip()
        level = (len(name) - len(name.lstrip()) - 1) // 2
        if level <= 1:
            rows.append(("  " * level + name.strip(), int(parts[1]) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:top]


def adapter_imports(repeat: int) -> list[dict[str, Any]]:
    from providers.registry import KNOWN_PROVIDERS

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = []
    for pool_type, entry in KNOWN_PROVIDERS.items():
        result: dict[str, Any] = {"pool_type": pool_type, "module": entry.module,
                                  "extra": entry.extra}
        for mode in ("cold", "warm"):
            samples: list[float] = []
            for _ in range(repeat):
                done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, entry.module, mode],
                                      capture_output=True, text=True, env=env, cwd=str(ROOT),
                                      check=False)
                answer: dict[str, Any] = (
                    json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout
                    else {"error": " ".join(done.stderr.strip().splitlines()[-1:])})
                if "error" in answer:
                    result["error"] = answer["error"]
                    break
                samples.append(answer["ms"])
            if "error" in result:
                break
            result[f"{mode}_ms"] = percentiles(samples)
        out.append(result)
    return out


TRIGGER_PROBE = """
import json, os, sys, time
bare = set(sys.modules)  # a namespace package's .pth may make an empty google.cloud
t0 = time.perf_counter()
from dispatcher.triggers.aws_lambda import handler
imported = time.perf_counter()
class Context:
    def get_remaining_time_in_millis(self): return 30_000
handler({"pushpool": "tick"}, Context())
done = time.perf_counter()
added = set(sys.modules) - bare
def loaded(names): return [m for m in names if m in added]
print(json.dumps({"import_ms": (imported - t0) * 1000, "first_ms": (done - imported) * 1000,
                  "sdks": loaded(("boto3", "google.cloud.run_v2", "azure", "modal")),
                  "unneeded": loaded(("aiohttp", "dispatcher.api", "jsonschema",
                                      "prometheus_client", "alembic", "jinja2", "rich",
                                      "httpx", "yaml")),
                  "modules": len(added)}))
"""
# Each handler module, and what its platform has loaded before it imports the handler:
# the Functions Framework (with Flask) serves the Google function and imports its module;
# the Azure Functions worker has azure.functions loaded when it reads function_app.py;
# the Lambda runtime loads nothing of the handler's.
TRIGGER_MODULES = (("dispatcher.triggers.aws_lambda", None),
                   ("dispatcher.triggers.gcp", "functions_framework"),
                   ("dispatcher.triggers.azure", "azure.functions"))


def trigger_imports(repeat: int) -> list[dict[str, Any]]:
    """Each cloud-function module's import in a fresh interpreter: cold, and on top of
    what its platform loaded first (the handler's own cost, which the target is for)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = []
    for module, platform in TRIGGER_MODULES:
        result: dict[str, Any] = {"module": module, "platform": platform}
        for mode in ("cold", platform or "cold"):
            samples = []
            for _ in range(repeat):
                done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, module, mode],
                                      capture_output=True, text=True, env=env,
                                      cwd=str(ROOT), check=False)
                answer = (json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout
                          else {})
                if "ms" in answer:
                    samples.append(answer["ms"])
            key = "cold_ms" if mode == "cold" else "after_platform_ms"
            result[key] = percentiles(samples) if samples else None
        result.setdefault("after_platform_ms", result["cold_ms"])
        out.append(result)
    return out


def trigger_first_event(repeat: int, database_url: str,
                        env: dict[str, str] | None = None) -> dict[str, Any]:
    """The Lambda handler's import, then its first tick with nothing due, cold (``env``:
    the process environment, default this one's, and settings such as
    PUSHPOOL_TICK_IDLE_PROBE)."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT),
           "PUSHPOOL_DATABASE_URL": database_url, "PUSHPOOL_TICK_ALLOW_SQLITE": "1"}
    imports, firsts, sdks, unneeded, modules = [], [], set(), set(), 0
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", TRIGGER_PROBE], capture_output=True,
                              text=True, env=env, cwd=str(ROOT), check=True)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        imports.append(answer["import_ms"])
        firsts.append(answer["first_ms"])
        sdks.update(answer["sdks"])
        unneeded.update(answer["unneeded"])
        modules = answer["modules"]
    return {"import_ms": percentiles(imports), "first_event_ms": percentiles(firsts),
            "cloud_sdks_loaded": sorted(sdks), "unneeded_loaded": sorted(unneeded),
            "modules_loaded": modules}


def migrated(url: str) -> str:
    """``url``'s store, made at the newest migration (the first event then finds it so)."""
    from dispatcher.store import Database

    async def migrate() -> None:
        db = await Database.connect(url)
        await db.close()

    asyncio.run(migrate())
    return url


def server_start(repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        server = start_server()
        times.append((time.perf_counter() - t0) * 1000)
        stop_server(server)
    return percentiles(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print("benchmarking start-up ...", flush=True)
    wall_ms([str(PUSHPOOL), "--help"], 1)  # warm the OS file cache and .pyc files
    help_ms = percentiles(wall_ms([str(PUSHPOOL), "--help"], args.repeat))
    python_ms = percentiles(wall_ms([sys.executable, "-c", "pass"], args.repeat))
    heaviest = heaviest_imports(["-c", "import dispatcher.cli"])
    adapters = adapter_imports(max(3, args.repeat // 2))
    start = server_start(max(2, args.repeat // 4))
    triggers = trigger_imports(max(3, args.repeat // 2))
    with postgres_database() as url:  # PUSHPOOL_BENCH_POSTGRES_URL's server
        first = trigger_first_event(max(3, args.repeat // 2), migrated(url))
        full = trigger_first_event(max(3, args.repeat // 2), url,
                                   {"PUSHPOOL_TICK_IDLE_PROBE": "0"})
    print_table("Start-up (ms, wall clock)", ["command", "runs", "p50", "p95", "max"], [
        ["pushpool --help", help_ms["n"], help_ms["p50"], help_ms["p95"], help_ms["max"]],
        ["python -c pass (interpreter alone)", python_ms["n"], python_ms["p50"],
         python_ms["p95"], python_ms["max"]],
        ["server start -> /api/health answers", start["n"], start["p50"], start["p95"],
         start["max"]]])
    print_table("Heaviest imports under `import dispatcher.cli` (cumulative ms)",
                ["module", "ms"], [[name, ms] for name, ms in heaviest])
    print_table("Provider adapter import time (ms, median)",
                ["pool type", "module", "cold", "after providers.base", "note"],
                [[a["pool_type"], a["module"],
                  a.get("cold_ms", {}).get("p50", "-"), a.get("warm_ms", {}).get("p50", "-"),
                  a.get("error", "")] for a in adapters])
    print_table("Cloud-function handlers: import (ms, median)",
                ["module", "cold", "after the platform's library", "p95 after"],
                [[t["module"], (t["cold_ms"] or {}).get("p50", "-"),
                  f"{t['after_platform_ms']['p50']:.1f}"
                  + (f" ({t['platform']})" if t["platform"] else "")
                  if t["after_platform_ms"] else "-",
                  (t["after_platform_ms"] or {}).get("p95", "-")] for t in triggers])
    print_table("Lambda handler, first event: a tick with nothing due (ms)",
                ["measure", "p50", "p95", "max"],
                [["import", first["import_ms"]["p50"], first["import_ms"]["p95"],
                  first["import_ms"]["max"]],
                 ["first tick: the idle probe (connect, one read)",
                  first["first_event_ms"]["p50"], first["first_event_ms"]["p95"],
                  first["first_event_ms"]["max"]],
                 ["first tick, probe off (store, migrate check, pass)",
                  full["first_event_ms"]["p50"], full["first_event_ms"]["p95"],
                  full["first_event_ms"]["max"]]])
    print(f"modules loaded by import and first event: {first['modules_loaded']}; cloud SDKs: "
          f"{', '.join(first['cloud_sdks_loaded']) or 'none'}; not needed by a tick: "
          f"{', '.join(first['unneeded_loaded']) or 'none'}")
    summary = [summary_row("pushpool --help, median", help_ms["p50"], "ms",
                           f"< {HELP_TARGET_MS:g} ms", help_ms["p50"] < HELP_TARGET_MS)]
    for a in adapters:
        if "warm_ms" in a:
            summary.append(summary_row(f"import {a['module']} (after providers.base)",
                                       a["warm_ms"]["p50"], "ms"))
    summary.append(summary_row("server start -> answering, median", start["p50"], "ms"))
    for t in triggers:
        if t["after_platform_ms"]:
            what = f"import {t['module']}" + (f" after {t['platform']}" if t["platform"]
                                              else "")
            summary.append(summary_row(f"{what}, median", t["after_platform_ms"]["p50"],
                                       "ms", "< 300 ms", t["after_platform_ms"]["p50"] < 300))
    summary.append(summary_row("Lambda first tick after import, nothing due, median",
                               first["first_event_ms"]["p50"], "ms", "< 100 ms",
                               first["first_event_ms"]["p50"] < 100))
    print_summary("Start-up targets", summary)
    path = write_json("startup", {"help_ms": help_ms, "python_ms": python_ms,
                                  "heaviest_imports": heaviest, "adapters": adapters,
                                  "server_start_ms": start, "triggers": triggers,
                                  "trigger_first_event": first,
                                  "trigger_first_event_probe_off": full, "summary": summary,
                                  "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
