from __future__ import annotations

from service.store.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(failures=3, cooldown_seconds=2, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 2.5
    assert breaker.allow()  # the one half-open probe
    assert not breaker.allow()  # no second probe while the first is out
    breaker.success()
    assert breaker.state == "closed"
    assert changes == ["open", "half_open", "closed"]


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_seconds=1, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_seconds=1, clock=clock)
    breaker.failure()
    clock.now += 1.5
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 1.5
    assert breaker.allow()
