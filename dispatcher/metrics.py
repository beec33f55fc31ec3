"""Prometheus metrics of this replica (prometheus-client), served at GET /metrics.

The engine counts what it does (submits, retries, throttles, lease expiries, breaker trips,
dead letters, skipped runs) and times the dispatch latency: a run's due time (its scheduled
time, or its creation if that is later) to the first provider ``submit`` call, the figure
``bench/`` measures. Store-wide gauges (runs by pool and state, breaker-paused pools) are
read from the store at scrape time, so every replica reports the same numbers for them.

Metrics live in their own registry, not prometheus-client's global one, so importing this
module twice or from tests never collides.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

if TYPE_CHECKING:
    from dispatcher.store.stats import StoreStats

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

disable_created_metrics()  # no *_created series: they double the output and help no query
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0)

DISPATCH_LATENCY = Histogram(
    "pushpool_dispatch_latency_seconds",
    "A run's due time (scheduled, or created if later) to its first provider submit call",
    ["pool_type"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
SUBMITS = Counter(
    "pushpool_submits", "Provider submit calls by outcome (submitted, retryable, throttled, "
    "timeout, permanent, error)", ["pool_type", "outcome"], registry=REGISTRY)
SUBMIT_RETRIES = Counter(
    "pushpool_submit_retries", "Submits retried after a retryable failure (after a backoff)",
    ["pool_type"], registry=REGISTRY)
THROTTLES = Counter(
    "pushpool_submit_throttles", "Submits the provider refused as throttled", ["pool_type"],
    registry=REGISTRY)
LEASE_EXPIRIES = Counter(
    "pushpool_lease_expiries", "Runs reclaimed because their claimer's lease expired",
    ["pool_type"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "pushpool_dead_letters", "Runs ended FAILED without reaching their provider, by reason "
    "(refused, attempts, deadline, build)", ["reason"], registry=REGISTRY)
SKIPPED_RUNS = Counter(
    "pushpool_runs_skipped", "Runs ended CANCELLED by a missed-run policy (catchup, overlap)",
    ["reason"], registry=REGISTRY)
BREAKER_TRIPS = Counter(
    "pushpool_breaker_trips", "Times this replica's circuit breaker paused a pool", ["pool"],
    registry=REGISTRY)
BREAKER_PROBES = Counter(
    "pushpool_breaker_probes", "Half-open probes of breaker-paused pools by outcome",
    ["pool", "outcome"], registry=REGISTRY)
RUNS = Gauge("pushpool_runs", "Runs in the store by pool and state", ["pool", "state"],
             registry=REGISTRY)
BREAKER_OPEN = Gauge("pushpool_breaker_open",
                     "1 while the pool is paused by the circuit breaker, else 0", ["pool"],
                     registry=REGISTRY)


def observe_dispatch_latency(pool_type: str, scheduled: datetime, created: datetime | None,
                             now: datetime) -> None:
    due = max(scheduled, created) if created is not None else scheduled
    DISPATCH_LATENCY.labels(pool_type).observe(max((now - due).total_seconds(), 0.0))


def dispatch_latency_histogram() -> list[tuple[str, int]]:
    """This replica's dispatch latencies since it started, as (bucket label, runs) pairs
    over every pool type: the figures of ``pushpool_dispatch_latency_seconds``."""
    cumulative: dict[float, float] = {}
    for metric in DISPATCH_LATENCY.collect():
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
    RUNS.clear()  # pools or states that are gone must not linger
    for pool, state, count in stats.runs:
        RUNS.labels(pool, state).set(count)
    BREAKER_OPEN.clear()
    for pool, open_ in stats.pools:
        BREAKER_OPEN.labels(pool).set(1 if open_ else 0)
    return generate_latest(REGISTRY)
