"""Sampling profiles of a benchmark's server process with py-spy, and where the time went.

``with py_spy(pid, path): ...`` records raw (collapsed) stacks of every thread while the
block runs; ``summarise(path)`` turns them into the top functions by self and inclusive
share of the samples, per thread (event loop, database threads) and per store
transaction. Usage on a file:

    python bench/profiling.py bench/results/profile-dispatch-sqlite.txt [--top 20]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VENV_PY_SPY = Path(sys.executable).with_name("py-spy")


def py_spy_path() -> str | None:
    return str(VENV_PY_SPY) if VENV_PY_SPY.exists() else shutil.which("py-spy")


def require_py_spy(parser: argparse.ArgumentParser, profile: bool) -> None:
    """``--profile`` without py-spy is a usage error (exit 2), said before any work."""
    if profile and py_spy_path() is None:
        parser.error("--profile records the server with py-spy, which is not installed: "
                     "pip install -e '.[bench]' (or pip install py-spy)")


@contextmanager
def py_spy(pid: int, out: Path, rate: int = 200) -> Iterator[Path]:
    """Record ``pid`` while the block runs (non-blocking sampling: the target never
    pauses). Writes py-spy's raw format to ``out``; a no-op if py-spy is missing."""
    exe = py_spy_path()
    if exe is None:
        print("py-spy not found: no profile recorded", file=sys.stderr)
        yield out
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
         "--rate", str(rate), "--threads", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _frame_name(frame: str) -> str:
    """'claim (dispatcher/store/claims.py:190)' -> 'claim (dispatcher/store/claims.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    # Paths relative to the repository, site-packages or the standard library.
    repo = str(Path(__file__).resolve().parent.parent) + "/"
    for marker in ("/site-packages/", repo, "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def _thread_kind(first_frame: str) -> str:
    """'thread (6175): pushpool-db-write_0' -> 'pushpool-db-write'; the event loop's thread
    is 'MainThread'."""
    name = first_frame.partition("): ")[2] or first_frame
    return name.rstrip("0123456789").rstrip("_-") or name


PROJECT_PREFIXES = ("dispatcher/", "providers/", "bench/")
WRAPPERS = ("run_server (", "serve (", "Database.run (", "Database._run_sqlite (")


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Where the samples went: per thread, per store transaction (the function a database
    thread was running), the top functions by self samples, and pushpool's own functions
    by inclusive samples (counted once per stack they appear in)."""
    self_counts: Counter[str] = Counter()
    project: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    transactions: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        kind = _thread_kind(frames[0]) if frames[0].startswith("thread (") else "?"
        frames = [f for f in frames if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        total += count
        names = [_frame_name(f) for f in frames]
        kinds[kind] += count
        self_counts[names[-1]] += count
        for name in set(names):
            if name.partition(" (")[2].startswith(PROJECT_PREFIXES) and \
                    not name.startswith(WRAPPERS):
                project[name] += count
        for i, name in enumerate(names[:-1]):
            if name.startswith("Database._run_sqlite ("):
                transactions[names[i + 1]] += count
                break

    def share(counter: Counter[str], n: int = top) -> list[tuple[str, float]]:
        return [(name, round(100 * k / total, 1)) for name, k in counter.most_common(n)]

    if total == 0:
        return {"samples": 0}
    return {"samples": total, "threads": dict(share(kinds, 20)),
            "transactions": share(transactions), "self": share(self_counts),
            "pushpool": share(project, top + 10)}


def print_summary(title: str, summary: dict[str, Any]) -> None:
    from bench.harness import print_table

    if not summary.get("samples"):
        print(f"{title}: no samples")
        return
    threads = ", ".join(f"{k} {v}%" for k, v in summary["threads"].items())
    print(f"{title}: {summary['samples']} samples; {threads}")
    print_table(f"{title}: self time", ["function", "% samples"],
                [[name, pct] for name, pct in summary["self"]])
    if summary["transactions"]:
        print_table(f"{title}: database threads, by transaction", ["transaction", "% samples"],
                    [[name, pct] for name, pct in summary["transactions"]])
    print_table(f"{title}: pushpool functions, inclusive", ["function", "% samples"],
                [[name, pct] for name, pct in summary["pushpool"]])


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print_summary(args.path.name, summarise(args.path, args.top))


if __name__ == "__main__":
    main()
