"""The adaptive RunTask token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from providers.ratelimit import AdaptiveTokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_one_token_per_interval_in_arrival_order() -> None:
    clock = Clock()
    bucket = AdaptiveTokenBucket(10, 3, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert [round(bucket.reserve(), 3) for _ in range(3)] == [0.1, 0.2, 0.3]
    clock.now += 1.0  # debt of 3 paid, 7 tokens saved, capped at the burst
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() > 0


def test_throttling_halves_once_per_cooldown_and_drops_saved_tokens() -> None:
    clock = Clock()
    bucket = AdaptiveTokenBucket(20, 100, min_rate=4, clock=clock)
    bucket.on_throttle()
    bucket.on_throttle()  # same overload episode: no second halving
    assert bucket.rate == 10 and bucket.throttles == 2
    assert bucket.reserve() == pytest.approx(0.1)  # no saved burst after a throttle
    for _ in range(3):
        clock.now += 1.0
        bucket.on_throttle()
    assert bucket.rate == 4 == bucket.lowest_rate  # floor


def test_successes_recover_the_rate_linearly_up_to_the_maximum() -> None:
    clock = Clock()
    bucket = AdaptiveTokenBucket(20, 10, min_rate=1, recovery=20, clock=clock)
    bucket.on_throttle()
    assert bucket.rate == 10
    for _ in range(10):  # one second of successes at 10/s adds max/recovery = 1/s
        bucket.on_success()
    assert bucket.rate == pytest.approx(11, rel=0.02)
    for _ in range(1000):
        bucket.on_success()
    assert bucket.rate == 20


def test_try_acquire_never_waits_or_borrows() -> None:
    clock = Clock()
    bucket = AdaptiveTokenBucket(1, 2, clock=clock)
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert bucket.try_acquire() and not bucket.try_acquire()


def test_drain_drops_saved_tokens_but_keeps_the_rate() -> None:
    clock = Clock()
    bucket = AdaptiveTokenBucket(2, 10, clock=clock)
    bucket.drain()
    assert bucket.rate == 2 and bucket.throttles == 0
    assert not bucket.try_acquire() and bucket.wait_time() == pytest.approx(0.5)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        AdaptiveTokenBucket(0, 10)
