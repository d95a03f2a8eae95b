"""Per-API-user rate limiting with Emarsys's three headers (emarsys-api.md §6).

Each API user has its own budget of requests per minute (its own `rate_limit`, else the emulator's).
The window is sliding (the last 60 seconds) or fixed (calendar minutes), an open question of the notes
(§10.3). Headers on every answer to an identified user: `X-RateLimit-Limit`, `X-Ratelimit-Remaining`
(that casing, as documented) and `X-RateLimit-Reset` (a unix time); never `Retry-After`.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60


class RateLimiter:
    def __init__(self, limit_for: Callable[[object], int], window_kind: Callable[[], str],
                 clock: Callable[[], float]):
        self._limit_for = limit_for        # user -> requests per minute (0 = unlimited)
        self._window_kind = window_kind    # -> "sliding" or "fixed"
        self.clock = clock                 # the server's clock (with its skew)
        self._sliding: dict[str, deque[float]] = {}
        self._fixed: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._sliding.clear()
            self._fixed.clear()

    def hit(self, user) -> tuple[bool, dict[str, str]]:
        """Count one request of `user`: (allowed, headers). No headers when the user is unlimited."""
        limit = self._limit_for(user)
        if not limit:
            return True, {}
        now = self.clock()
        with self._lock:
            if self._window_kind() == "fixed":
                window = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
                start, count = self._fixed.get(user.name, (window, 0))
                if start != window:
                    start, count = window, 0
                allowed = count < limit
                if allowed:
                    count += 1
                self._fixed[user.name] = (start, count)
                remaining, reset = limit - count, start + WINDOW_SECONDS
            else:
                times = self._sliding.setdefault(user.name, deque())
                while times and times[0] <= now - WINDOW_SECONDS:
                    times.popleft()
                while len(times) > limit:   # the limit was lowered meanwhile
                    times.popleft()
                allowed = len(times) < limit
                if allowed:
                    times.append(now)
                remaining = limit - len(times)
                # The next slot frees when the oldest counted request leaves the window.
                reset = (times[0] if times else now) + WINDOW_SECONDS
        return allowed, self.headers(limit, remaining, reset)

    def exhausted_headers(self, user, reset_in: float | None = None) -> dict[str, str]:
        """Headers of an injected 429: nothing remaining, the window resetting `reset_in` seconds from
        now (default a minute)."""
        limit = self._limit_for(user) or 1000   # even with limiting off, a 429 names a limit
        return self.headers(limit, 0, self.clock() + (WINDOW_SECONDS if reset_in is None else reset_in))

    @staticmethod
    def headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
