"""A circuit breaker per downstream service.

Closed: calls go through; ``failure_threshold`` consecutive failures open it. Open: calls are
refused at once (the caller falls back) for ``reset_timeout_s``. Half-open: one probe call is let
through; success closes the breaker, failure re-opens it. So a dead or slow service costs one
timeout per ``reset_timeout_s`` instead of one per request, and recovery needs no operator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.clock = clock
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._lock = threading.Lock()

    @property
    def state(self) -> State:
        with self._lock:
            if self._state == "open" and self.clock() - self._opened_at >= self.reset_timeout_s:
                return "half_open"
            return self._state

    def allow(self) -> bool:
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open" and self.clock() - self._opened_at < self.reset_timeout_s:
                return False
            if self._probe_in_flight:
                return False
            self._state = "half_open"
            self._probe_in_flight = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._state = "closed"
            self._failures = 0
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._probe_in_flight = False
            if self._state == "half_open":
                self._state, self._opened_at = "open", self.clock()
                return
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._state, self._opened_at = "open", self.clock()
