"""Client-side rate limiting per API user (emarsys-api.md §6: 1000 requests/minute per credential).

Emarsys counts requests per API user in a window it doesn't document (the emulator uses a fixed
minute) and answers a 429 with no `Retry-After`. So the limiter:

- paces request starts evenly (a GCRA: one start every `window / budget` seconds, where the budget is
  the limit less a small headroom). Any window of `window` seconds then holds at most `budget + 2`
  starts, whatever the server's window alignment, and the headroom (2%, at least 3 requests: 20 a minute by
  default) absorbs the jitter of request latency between our start and the server's count;
- listens to the server: when `X-Ratelimit-Remaining` says no more than our own requests already in
  flight can still pass, or after a 429, it holds every new start until `X-RateLimit-Reset`.

Waits use injected `clock`/`sleep`, so tests run the pacing with a fake clock.
"""

from __future__ import annotations

import logging
import threading
import time
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)

DEFAULT_HEADROOM = 0.02
MIN_HEADROOM_REQUESTS = 3
# A reset farther away than this is not believed (a wrong header must not stall a run for hours).
MAX_RESET_WAIT = 300.0
# Seconds added to the server's reset time, for the rounding of the Date and Reset headers.
RESET_MARGIN = 0.5


class RateLimiter:
    def __init__(self, limit: int, window: float = 60.0, *, headroom: float = DEFAULT_HEADROOM,
                 name: str = "", clock=time.monotonic, wall_clock=time.time, sleep=time.sleep):
        self.name = name
        self.window = window
        self.headroom = headroom
        self._clock, self._wall_clock, self._sleep = clock, wall_clock, sleep
        self._lock = threading.Lock()
        self._next_start = 0.0       # the earliest time the next request may start (GCRA)
        self._blocked_until = 0.0    # the server said "no more" until then
        self._block_reason = ""
        self._announced_block = 0.0  # the block end we last logged, so each block is logged once
        self.in_flight = 0
        # Statistics, also for the periodic info line.
        self.requests_started = 0
        self.waited_seconds = 0.0
        self._period_start = clock()
        self._period_requests = 0
        self._period_wait = 0.0
        self.configure(limit)

    def configure(self, limit: int) -> None:
        """`limit` requests per `window`; 0 or less turns pacing off (server blocks still apply)."""
        with self._lock:
            self.limit = limit
            # At least 3 requests of headroom: 2% of a small limit (60 a minute) is not even one
            # request, too little for the jitter between our starts and the server's count.
            budget = max(limit - max(limit * self.headroom, MIN_HEADROOM_REQUESTS), 1.0)
            self.interval = self.window / max(budget, 1.0) if limit > 0 else 0.0

    def __repr__(self) -> str:
        return f"RateLimiter(limit={self.limit}/{self.window:g}s, user={self.name!r})"

    # -- starting a request ---------------------------------------------------------------------

    def acquire(self) -> float:
        """Block until one more request may start; count it in flight; return the seconds waited.
        Call `release` when its response (or failure) is in."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                ready_at = max(self._next_start, self._blocked_until)
                if ready_at <= now:
                    if self.interval:
                        # One interval of tolerance lets a start that woke late catch up, so the
                        # sleeps' overshoot doesn't eat into the budget.
                        self._next_start = max(self._next_start, now - self.interval) + self.interval
                    self.in_flight += 1
                    self.requests_started += 1
                    self._account(now, waited)
                    return waited
                delay = ready_at - now
                announce = self._blocked_until > self._next_start and \
                    self._blocked_until != self._announced_block
                if announce:
                    self._announced_block = self._blocked_until
                    reason = self._block_reason
            if announce:
                log.info("rate limit of Emarsys API user %r: holding new requests for %.1fs (%s)",
                         self.name, delay, reason)
            self._sleep(delay)
            waited += delay

    def _account(self, now: float, waited: float) -> None:
        """Called with the lock held: statistics, and one info line per window in which pacing
        made requests wait (the steady state at the limit, too common to log one by one)."""
        self.waited_seconds += waited
        self._period_requests += 1
        self._period_wait += waited
        if now - self._period_start >= self.window:
            if self._period_wait > 0:
                log.info("rate limit of Emarsys API user %r: %d requests in the last %.0fs, which waited "
                         "%.1fs in total to stay under %d per %gs", self.name, self._period_requests,
                         now - self._period_start, self._period_wait, self.limit, self.window)
            self._period_start, self._period_requests, self._period_wait = now, 0, 0.0
        elif waited:
            log.debug("rate limit of Emarsys API user %r: waited %.3fs to pace requests", self.name, waited)

    # -- what the server said -----------------------------------------------------------------

    def release(self, headers=None) -> None:
        """One request is done; `headers` are its response's (None when it got no response)."""
        with self._lock:
            self.in_flight = max(self.in_flight - 1, 0)
            in_flight = self.in_flight
        if headers is None:
            return
        self._learn_limit(_int_header(headers.get("x-ratelimit-limit")))
        remaining = _int_header(headers.get("x-ratelimit-remaining"))
        if remaining is None or remaining > in_flight:
            return
        wait = reset_wait(headers, self._wall_clock)
        if wait is None:
            return
        self.block_for(wait, f"X-Ratelimit-Remaining is {remaining} with {in_flight} of our requests "
                             "still in flight; waiting for X-RateLimit-Reset")

    def _learn_limit(self, announced: int | None) -> None:
        """Pace at the server's X-RateLimit-Limit when it is below ours: an API user whose limit is
        lower than the configured one (Emarsys can lower it under load) would otherwise meet the wall
        at every window and see its requests in flight refused together. Never raised above the
        configured limit, and a limit of 0 (pacing off, by choice) stays off."""
        if announced is None or announced <= 0 or self.limit <= 0 or announced >= self.limit:
            return
        log.info("rate limit of Emarsys API user %r: Emarsys announces %d requests a minute "
                 "(X-RateLimit-Limit), below the %d configured; pacing at %d", self.name, announced,
                 self.limit, announced)
        self.configure(announced)

    # Kept for callers of the first version: the server's view, without ending a request.
    def observe(self, headers) -> None:
        remaining = _int_header(headers.get("x-ratelimit-remaining"))
        wait = reset_wait(headers, self._wall_clock)
        if remaining is not None and remaining <= 0 and wait is not None:
            self.block_for(wait, "X-Ratelimit-Remaining is 0; waiting for X-RateLimit-Reset")

    def block_for(self, seconds: float, reason: str = "the server asked to wait") -> None:
        """Hold every new start for `seconds` (a 429, or the window used up)."""
        with self._lock:
            until = self._clock() + max(seconds, 0.0)
            if until > self._blocked_until:
                self._blocked_until = until
                self._block_reason = reason


def reset_wait(headers, wall_clock=time.time) -> float | None:
    """Seconds until the server's rate-limit window resets, from `X-RateLimit-Reset`: a unix
    timestamp (as Emarsys documents), read against the response's own `Date` header when there is one
    so that our clock's skew doesn't matter; a small number is taken as seconds from now. None when
    the header is absent or unreadable."""
    raw = headers.get("x-ratelimit-reset")
    if raw is None:
        return None
    try:
        reset = float(raw)
    except ValueError:
        return None
    if reset != reset or reset in (float("inf"), float("-inf")):
        return None
    if reset < 1_000_000_000:      # a delta in seconds, not a timestamp
        wait = reset
    else:
        now = server_time(headers)
        wait = reset - (now if now is not None else wall_clock())
    return min(max(wait, 0.0) + RESET_MARGIN, MAX_RESET_WAIT)


def server_time(headers) -> float | None:
    """The server's clock from its `Date` header (whole seconds), as a unix timestamp."""
    value = headers.get("date")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _int_header(value) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


_registry: dict[tuple[str, str], RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(api_url: str, user: str, limit: int) -> RateLimiter:
    """One limiter per API user and endpoint, shared by every client and sync of the process: the
    budget belongs to the credential, not to one sync."""
    with _registry_lock:
        key = (api_url.rstrip("/"), user)
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = RateLimiter(limit, name=user)
        elif limiter.limit != limit:
            limiter.configure(limit)
        return limiter
