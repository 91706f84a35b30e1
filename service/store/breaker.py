"""A circuit breaker so a dead Redis costs nothing per request instead of a timeout each.

Closed: calls pass, consecutive failures are counted. Open after `failures` in a row: calls are
refused at once. After `cooldown` seconds one probe call is let through (half-open); its success
closes the breaker, its failure opens it for another cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at = 0.0
        self._state: BreakerState = "closed"
        self._probing = False

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        if self._state == "closed":
            return True
        if self._state == "open" and self._clock() - self._opened_at >= self._cooldown:
            self._set("half_open")
        if self._state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """An allowed call that never reached Redis: a half-open probe may be tried again."""
        self._probing = False

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        if self._state != "closed":
            self._set("closed")

    def failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self._state == "half_open" or self._failures >= self._threshold:
            self._opened_at = self._clock()
            if self._state != "open":
                self._set("open")

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
