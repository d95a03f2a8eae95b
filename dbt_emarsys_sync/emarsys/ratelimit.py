"""Client-side rate limiting per API user (emarsys-api.md §6: 1000 requests/minute per credential).

A sliding-window log: at most `limit` requests start in any `window` seconds. Any fixed window the
server may use is such an interval too, so a client that waits here never meets a 429 from pacing alone.
The server's `X-Ratelimit-Remaining`/`X-RateLimit-Reset` headers tighten it further when they say less.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class RateLimiter:
    def __init__(self, limit: int, window: float = 60.0, clock=time.monotonic, wall_clock=time.time,
                 sleep=time.sleep):
        self.limit = limit
        self.window = window
        self._clock, self._wall_clock, self._sleep = clock, wall_clock, sleep
        self._starts: deque[float] = deque()
        self._blocked_until = 0.0   # monotonic time before which the server said "no more"
        self._cond = threading.Condition()
        self.waited_seconds = 0.0

    def acquire(self) -> float:
        """Block until one more request may start; return the seconds waited."""
        if self.limit <= 0:
            return 0.0
        waited = 0.0
        with self._cond:
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self.window:
                    self._starts.popleft()
                wait = max(self._blocked_until - now, 0.0)
                if len(self._starts) >= self.limit:
                    wait = max(wait, self._starts[0] + self.window - now)
                if wait <= 0:
                    self._starts.append(now)
                    self.waited_seconds += waited
                    return waited
                self._cond.wait(wait)
                waited += self._clock() - now

    def observe(self, headers) -> None:
        """Take the server's view into account: no remaining requests means wait for its reset."""
        remaining, reset = headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
        if remaining is None or reset is None:
            return
        try:
            remaining_n, reset_at = int(remaining), float(reset)
        except ValueError:
            return
        if remaining_n <= 0:
            self.block_for(max(reset_at - self._wall_clock(), 0.0))

    def block_for(self, seconds: float) -> None:
        with self._cond:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)
            self._cond.notify_all()


_registry: dict[tuple[str, str], RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(api_url: str, user: str, limit: int) -> RateLimiter:
    """One limiter per API user and endpoint, shared by every sync of the process."""
    with _registry_lock:
        key = (api_url, user)
        if key not in _registry or _registry[key].limit != limit:
            _registry[key] = RateLimiter(limit)
        return _registry[key]
