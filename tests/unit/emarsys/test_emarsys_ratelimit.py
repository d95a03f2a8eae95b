"""The per-user rate limiter: pacing under the budget (on a fake clock), and listening to the server's
X-Ratelimit-Remaining / X-RateLimit-Reset."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from email.utils import formatdate

import pytest

from dbt_emarsys_sync.emarsys import RateLimiter
from dbt_emarsys_sync.emarsys.ratelimit import RESET_MARGIN, limiter_for, reset_wait
from tests.unit.emarsys.support import FakeClock, messages


def fake_limiter(limit: int, **kw) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(limit, clock=clock.monotonic, wall_clock=clock.wall, sleep=clock.sleep, **kw), clock


def starts_of(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    out = []
    for _ in range(n):
        limiter.acquire()
        out.append(clock.now)
        limiter.release(None)
    return out


def max_in_any_window(starts: list[float], window: float) -> int:
    return max(bisect.bisect_left(starts, s + window) - i for i, s in enumerate(starts))


def test_pacing_holds_any_minute_under_the_limit_and_near_it():
    limiter, clock = fake_limiter(1000)
    starts = starts_of(limiter, clock, 5000)
    busiest = max_in_any_window(starts, 60.0)
    assert busiest <= 1000 - 20 + 2                 # the 2% headroom, plus the catch-up tolerance
    per_minute = (len(starts) - 1) / (starts[-1] - starts[0]) * 60
    assert 0.95 * 1000 <= per_minute <= 1000          # the floor: 95% of the ceiling
    assert limiter.waited_seconds > 0


def test_no_pacing_when_the_limit_is_off():
    limiter, clock = fake_limiter(0)
    starts_of(limiter, clock, 100)
    assert clock.sleeps == []


def test_a_late_wake_up_is_caught_up_but_never_bursts_beyond_two():
    limiter, clock = fake_limiter(60)     # one start per ~1.02 s
    limiter.acquire()
    clock.now += 30                        # idle: only one extra start may follow at once
    assert limiter.acquire() == 0 and limiter.acquire() == 0
    assert limiter.acquire() > 0


def date_header(wall: float) -> str:
    return formatdate(wall, usegmt=True)


def test_remaining_used_up_by_our_own_requests_holds_new_starts_until_reset(caplog):
    caplog.set_level(logging.INFO)
    limiter, clock = fake_limiter(0, name="api-user")
    for _ in range(3):
        limiter.acquire()                   # three in flight
    now = int(clock.wall())
    limiter.release({"x-ratelimit-remaining": "2", "x-ratelimit-reset": str(now + 20),
                     "date": date_header(now)})
    # 2 left, 2 of ours still in flight: nothing new may start before the reset.
    waited = limiter.acquire()
    assert waited == pytest.approx(20 + RESET_MARGIN)
    assert any("holding new requests for 20.5s" in m and "X-Ratelimit-Remaining is 2" in m
               for m in messages(caplog))


def test_remaining_above_what_is_in_flight_does_not_hold():
    limiter, clock = fake_limiter(0)
    limiter.acquire()
    now = int(clock.wall())
    limiter.release({"x-ratelimit-remaining": "5", "x-ratelimit-reset": str(now + 20), "date": date_header(now)})
    assert limiter.acquire() == 0


def test_a_block_is_logged_once_however_many_wait(caplog):
    caplog.set_level(logging.INFO)
    limiter, clock = fake_limiter(0)
    limiter.block_for(30, "Emarsys answered HTTP 429")
    limiter.acquire()
    limiter.acquire()
    assert [m for m in messages(caplog) if "holding" in m] == [
        "rate limit of Emarsys API user '': holding new requests for 30.0s (Emarsys answered HTTP 429)"]
    assert clock.sleeps == [30.0]


@pytest.mark.parametrize("headers,expected", [
    ({"x-ratelimit-reset": "1700000030", "date": date_header(1_700_000_000)}, 30 + RESET_MARGIN),
    ({"x-ratelimit-reset": "1700000030"}, 10 + RESET_MARGIN),          # no Date: our wall clock
    ({"x-ratelimit-reset": "12"}, 12 + RESET_MARGIN),                  # a delta, not a timestamp
    ({"x-ratelimit-reset": "1699999990", "date": date_header(1_700_000_000)}, RESET_MARGIN),  # passed
    ({"x-ratelimit-reset": "1800000000", "date": date_header(1_700_000_000)}, 300.0),  # not believed
    ({}, None), ({"x-ratelimit-reset": "soon"}, None), ({"x-ratelimit-reset": "nan"}, None),
])
def test_reset_wait_reads_the_reset_against_the_servers_clock(headers, expected):
    assert reset_wait(headers, wall_clock=lambda: 1_700_000_020) == (
        pytest.approx(expected) if expected is not None else None)


def test_one_limiter_per_api_user_shared_by_clients():
    a = limiter_for("https://api.example/", "user-a", 1000)
    assert limiter_for("https://api.example", "user-a", 1000) is a
    assert limiter_for("https://api.example", "user-b", 1000) is not a
    assert limiter_for("https://api.example", "user-a", 500) is a and a.limit == 500


def test_threads_share_the_budget_in_real_time():
    # A one-second window keeps this quick; the pacing is the same per minute.
    limiter = RateLimiter(50, window=1.0)
    starts: list[float] = []
    lock = threading.Lock()

    def work():
        for _ in range(25):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())
            limiter.release(None)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    starts.sort()
    assert len(starts) == 100
    assert max_in_any_window(starts, 1.0) <= 50


def test_a_lower_limit_announced_by_the_server_is_adopted(caplog):
    caplog.set_level(logging.INFO)
    limiter, clock = fake_limiter(1000, name="api-user")
    limiter.acquire()
    now = int(clock.wall())
    limiter.release({"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59",
                     "x-ratelimit-reset": str(now + 60), "date": date_header(now)})
    assert limiter.limit == 60
    starts = starts_of(limiter, clock, 200)
    assert max_in_any_window(starts, 60.0) <= 60
    assert any("announces 60 requests a minute" in m for m in messages(caplog))


def test_an_announced_limit_never_raises_ours_nor_turns_pacing_on():
    limiter, clock = fake_limiter(600)
    limiter.acquire()
    limiter.release({"x-ratelimit-limit": "1000"})
    assert limiter.limit == 600
    off, clock = fake_limiter(0)
    off.acquire()
    off.release({"x-ratelimit-limit": "60"})
    assert off.limit == 0
    starts_of(off, clock, 100)
    assert clock.sleeps == []


def test_a_small_limit_keeps_at_least_three_requests_of_headroom():
    # 2% of 60 is not a whole request: latency jitter between our starts and the server's count
    # would push a window over. 60 a minute is paced as 57.
    assert fake_limiter(60)[0].interval == pytest.approx(60 / 57)
    assert fake_limiter(1000)[0].interval == pytest.approx(60 / 980)
