"""Run every benchmark, one after another, and show every target in one table.

Each benchmark runs as its own process (so one failing does not stop the rest) and writes
its JSON under bench/results/; this collects their ``summary`` rows into
bench/results/all.json. The default sizes keep the whole run to roughly ten minutes on
2 cores; ``--full`` uses the target sizes (100,000 deployments and 1,000,000 runs, both
stores), which takes several times longer. Usage:

    python bench/run_all.py [--full]
        [--only startup,dispatch,schedule,scale,providers,cloud-dispatch,recovery,tick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    RESULTS,
    ROOT,
    describe_machine,
    postgres_available,
    print_summary,
    write_json,
)

BENCH = ROOT / "bench"


def plan(full: bool, postgres: bool) -> list[tuple[str, list[str], str]]:
    """(name, argv after the script, results file) of each benchmark run."""
    backend = "both" if postgres else "sqlite"
    runs: list[tuple[str, list[str], str]] = [
        ("startup", ["startup.py", "--repeat", "10"], "startup"),
        ("dispatch", ["dispatch.py", "--backend", backend, "--rates", "10,100,1000",
                      "--seconds", "10" if full else "5", "--burst", "10000"], "dispatch"),
        ("schedule", ["schedule.py", "--deployments", "1000", "--minutes",
                      "2" if full else "1"], "schedule-sqlite"),
        ("scale", ["scale.py", *(["--deployments", "100000", "--runs", "1000000"] if full
                                 else ["--deployments", "10000", "--runs", "100000"])],
         "scale-sqlite"),
        ("providers", ["providers.py"], "providers"),
        ("cloud-dispatch", ["cloud_dispatch.py", "--seconds", "10" if full else "5"],
         "cloud_dispatch"),
        ("recovery", ["recovery.py", "--repeat", "3"], "recovery"),
    ]
    if postgres:  # ticks refuse SQLite
        runs.append(("tick", ["tick.py", "--repeat", "5"], "tick"))
    if full and postgres:
        runs.insert(3, ("schedule-postgresql", ["schedule.py", "--deployments", "1000",
                                                "--backend", "postgresql"],
                        "schedule-postgresql"))
        runs.append(("scale-postgresql", ["scale.py", "--backend", "postgresql",
                                          "--deployments", "100000", "--runs", "1000000"],
                     "scale-postgresql"))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the target sizes (slow)")
    parser.add_argument("--only", default="", help="benchmark names, comma-separated")
    args = parser.parse_args()
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    postgres = postgres_available()
    if not postgres:
        print("PostgreSQL is not answering on 127.0.0.1:5432: SQLite only", flush=True)
    print(f"machine: {describe_machine()}", flush=True)
    summary: list[dict[str, Any]] = []
    outcomes: dict[str, Any] = {}
    for name, argv, result in plan(args.full, postgres):
        if only and name not in only and name.split("-")[0] not in only:
            continue
        print(f"\n=== {name}: python bench/{' '.join(argv)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:]], cwd=str(ROOT),
                              check=False)
        seconds = time.perf_counter() - started
        outcomes[name] = {"exit_code": done.returncode, "seconds": round(seconds, 1)}
        path = RESULTS / f"{result}.json"
        if done.returncode == 0 and path.exists():
            summary.extend(json.loads(path.read_text()).get("summary", []))
        else:
            print(f"{name} failed (exit {done.returncode}); see its output above", flush=True)
    print()
    print_summary(f"All targets ({describe_machine()})", summary)
    for name, outcome in outcomes.items():
        print(f"  {name}: {outcome['seconds']:.0f}s, exit {outcome['exit_code']}")
    path = write_json("all", {"summary": summary, "benchmarks": outcomes,
                              "args": vars(args)})
    print(f"wrote {path}")
    if any(o["exit_code"] for o in outcomes.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
