"""Rate limiting per API user (emarsys-api.md §6, §9, §10.3)."""

from __future__ import annotations

import time

import pytest

from tests.emulator.conftest import Api, reply


def test_every_answer_carries_the_three_headers(api, control):
    """§6: X-RateLimit-Limit, X-Ratelimit-Remaining, X-RateLimit-Reset (a unix time) on every
    response: success and request errors. (Header names are case-insensitive in HTTP; uvicorn's
    httptools writer lower-cases them on the wire.)"""
    control.settings(rate_limit=50)
    responses = [api.get("/field"), api.get("/contactlist/999/count"), api.upsert([{"1": "no key"}]),
                 api.get("/field/translate/xx")]
    for n, response in enumerate(responses, start=1):
        headers = response.headers
        assert headers["X-RateLimit-Limit"] == "50"
        assert int(headers["X-Ratelimit-Remaining"]) == 50 - n
        assert time.time() < int(headers["X-RateLimit-Reset"]) <= time.time() + 61
        assert "Retry-After" not in headers


def test_over_the_limit_is_429_with_7003_and_no_retry_after(api, control):
    """§6: HTTP 429, replyCode 7003, no Retry-After."""
    control.settings(rate_limit=3)
    assert [api.get("/field").status_code for _ in range(3)] == [200, 200, 200]
    response = api.get("/field")
    assert reply(response) == (429, 7003)
    assert response.headers["X-Ratelimit-Remaining"] == "0" and "Retry-After" not in response.headers


def test_the_429_body_can_be_empty(api, control):
    """§10.3: the exact 429 body is open: an empty body is a setting."""
    control.settings(rate_limit=1, rate_limit_reply="empty")
    api.get("/field")
    response = api.get("/field")
    assert response.status_code == 429 and response.content == b""


def test_each_api_user_has_its_own_budget(emu, http, control):
    """§1.4 / §6: limits attach to the API user; a user's own rate_limit overrides the default."""
    control.settings(rate_limit=2)
    control.seed(users=[{"name": "other", "secret": "pw", "scheme": "oauth"},
                        {"name": "big", "secret": "pw", "scheme": "wsse", "rate_limit": 100}])
    config = emu.emulator.config
    first, other, big = (Api(http, "oauth", config.client_id, config.client_secret),
                         Api(http, "oauth", "other", "pw"), Api(http, "wsse", "big", "pw"))
    assert [first.get("/field").status_code for _ in range(3)] == [200, 200, 429]
    assert other.get("/field").status_code == 200
    response = big.get("/field")
    assert response.headers["X-RateLimit-Limit"] == "100" and response.headers["X-Ratelimit-Remaining"] == "99"


@pytest.mark.parametrize("window", ["sliding", "fixed"])
def test_the_window_reopens_at_the_reset_time(v3, control, window):
    """§10.3: sliding (last 60 s, the default) or fixed (calendar minute) window; past the
    advertised reset the user may send again."""
    control.settings(rate_limit=2, rate_limit_window=window)
    v3.get("/field")
    reset = int(v3.get("/field").headers["X-RateLimit-Reset"])
    if window == "fixed":
        assert reset % 60 == 0
    assert v3.get("/field").status_code == 429
    control.settings(clock_skew=reset - time.time() + 1)   # the server's clock passes the reset
    assert v3.get("/field").status_code == 200


def test_rate_limiting_off_sends_no_headers(v3, control):
    """rate_limit 0 turns limiting off (the benchmark setting): no limit, no headers."""
    control.settings(rate_limit=0)
    assert all(v3.get("/field").status_code == 200 for _ in range(5))
    assert "X-RateLimit-Limit" not in v3.get("/field").headers
