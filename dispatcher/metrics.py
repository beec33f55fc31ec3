"""Prometheus metrics of this replica (prometheus-client), served at GET /metrics.

The engine counts what it does (submits, retries, throttles, lease expiries, breaker trips,
dead letters, skipped runs) and times the dispatch latency: a run's due time (its scheduled
time, or its creation if that is later) to the first provider ``submit`` call, the figure
``bench/`` measures. Store-wide gauges (runs by pool and state, breaker-paused pools) are
read from the store at scrape time, so every replica reports the same numbers for them.

Metrics live in their own registry, not prometheus-client's global one, so importing this
module twice or from tests never collides. They are made on first use, so a cloud
function's tick that has nothing to count never imports prometheus-client.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from dispatcher.store.stats import StoreStats

    # Attributes of the module, made by ``__getattr__`` on first use.
    CONTENT_TYPE_LATEST: str
    REGISTRY: CollectorRegistry
    DISPATCH_LATENCY: Histogram
    SUBMITS: Counter
    SUBMIT_RETRIES: Counter
    THROTTLES: Counter
    LEASE_EXPIRIES: Counter
    DEAD_LETTERS: Counter
    SKIPPED_RUNS: Counter
    BREAKER_TRIPS: Counter
    BREAKER_PROBES: Counter
    RUNS: Gauge
    BREAKER_OPEN: Gauge

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0)


@functools.cache
def _collectors() -> dict[str, Any]:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        ProcessCollector,
        disable_created_metrics,
    )

    disable_created_metrics()  # no *_created series: they double the output and help no query
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return {
        "CONTENT_TYPE_LATEST": CONTENT_TYPE_LATEST,
        "REGISTRY": registry,
        "DISPATCH_LATENCY": Histogram(
            "pushpool_dispatch_latency_seconds",
            "A run's due time (scheduled, or created if later) to its first provider submit "
            "call", ["pool_type"], buckets=LATENCY_BUCKETS, registry=registry),
        "SUBMITS": Counter(
            "pushpool_submits", "Provider submit calls by outcome (submitted, retryable, "
            "throttled, timeout, permanent, error)", ["pool_type", "outcome"],
            registry=registry),
        "SUBMIT_RETRIES": Counter(
            "pushpool_submit_retries", "Submits retried after a retryable failure (after a "
            "backoff)", ["pool_type"], registry=registry),
        "THROTTLES": Counter(
            "pushpool_submit_throttles", "Submits the provider refused as throttled",
            ["pool_type"], registry=registry),
        "LEASE_EXPIRIES": Counter(
            "pushpool_lease_expiries", "Runs reclaimed because their claimer's lease expired",
            ["pool_type"], registry=registry),
        "DEAD_LETTERS": Counter(
            "pushpool_dead_letters", "Runs ended FAILED without reaching their provider, by "
            "reason (refused, attempts, deadline, build)", ["reason"], registry=registry),
        "SKIPPED_RUNS": Counter(
            "pushpool_runs_skipped", "Runs ended CANCELLED by a missed-run policy (catchup, "
            "overlap)", ["reason"], registry=registry),
        "BREAKER_TRIPS": Counter(
            "pushpool_breaker_trips", "Times this replica's circuit breaker paused a pool",
            ["pool"], registry=registry),
        "BREAKER_PROBES": Counter(
            "pushpool_breaker_probes", "Half-open probes of breaker-paused pools by outcome",
            ["pool", "outcome"], registry=registry),
        "RUNS": Gauge("pushpool_runs", "Runs in the store by pool and state",
                      ["pool", "state"], registry=registry),
        "BREAKER_OPEN": Gauge("pushpool_breaker_open",
                              "1 while the pool is paused by the circuit breaker, else 0",
                              ["pool"], registry=registry),
    }


def __getattr__(name: str) -> Any:
    collectors = _collectors()
    if name in collectors:
        return collectors[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def observe_dispatch_latency(pool_type: str, scheduled: datetime, created: datetime | None,
                             now: datetime) -> None:
    due = max(scheduled, created) if created is not None else scheduled
    latency = max((now - due).total_seconds(), 0.0)
    _collectors()["DISPATCH_LATENCY"].labels(pool_type).observe(latency)


def dispatch_latency_histogram() -> list[tuple[str, int]]:
    """This replica's dispatch latencies since it started, as (bucket label, runs) pairs
    over every pool type: the figures of ``pushpool_dispatch_latency_seconds``."""
    cumulative: dict[float, float] = {}
    for metric in _collectors()["DISPATCH_LATENCY"].collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                cumulative[bound] = cumulative.get(bound, 0.0) + sample.value
    rows, below = [], 0.0
    for bound in sorted(cumulative):
        label = f"≤ {bound * 1000:g} ms" if bound < 1 else (
            f"≤ {bound:g} s" if bound != float("inf") else "longer")
        rows.append((label, int(cumulative[bound] - below)))
        below = cumulative[bound]
    return rows


def exposition(stats: StoreStats) -> bytes:
    """The text exposition of every metric, with the store-wide gauges set from ``stats``."""
    from prometheus_client import generate_latest

    collectors = _collectors()
    runs, breaker_open = collectors["RUNS"], collectors["BREAKER_OPEN"]
    runs.clear()  # pools or states that are gone must not linger
    for pool, state, count in stats.runs:
        runs.labels(pool, state).set(count)
    breaker_open.clear()
    for pool, open_ in stats.pools:
        breaker_open.labels(pool).set(1 if open_ else 0)
    return generate_latest(collectors["REGISTRY"])
