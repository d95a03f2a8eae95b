"""The retry decision (`decide`, one function) and the client's retry loop against injected faults."""

from __future__ import annotations

import logging
import random
from email.utils import formatdate

import httpx
import orjson
import pytest

from dbt_emarsys_sync.emarsys import (AuthError, ContactListExists, EmarsysConfigError, EmarsysSettings,
                                      PermissionDenied, RequestRejected, RetryPolicy, TransientError, decide,
                                      encode_contacts)
from tests.unit.emarsys.support import messages

SETTINGS = EmarsysSettings(api_url="https://api.example", scheme="oauth", client_id="cid", client_secret="cs")
POLICY = RetryPolicy(wait_jitter=0.0, rate_limit_jitter=0.0)
REQUEST = httpx.Request("PUT", "https://api.example/api/v3/contact/")


def envelope(status: int, code: int = 0, text: str = "OK", data: object = "", headers=None) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps({"replyCode": code, "replyText": text, "data": data}),
                          headers=headers)


def decision(outcome, attempt: int = 1, elapsed: float = 0.0, policy: RetryPolicy = POLICY):
    return decide("PUT", "/contact/", outcome, attempt=attempt, elapsed=elapsed, policy=policy,
                  settings=SETTINGS, wall_clock=lambda: 1_700_000_000, rng=random.Random(1))


def test_success_and_http_200_errors():
    ok = decision(envelope(200, data={"ids": []}))
    assert ok.envelope is not None and ok.envelope.data == {"ids": []}
    rejected = decision(envelope(200, 2004, "Invalid key field id: 99"))
    assert isinstance(rejected.error, RequestRejected) and rejected.error.reply_code == 2004


def test_429_waits_for_the_reset_read_against_the_servers_date():
    d = decision(envelope(429, 7003, headers={"X-RateLimit-Reset": "1700000042",
                                              "Date": formatdate(1_700_000_000, usegmt=True)}))
    assert d.wait == pytest.approx(42.5) and "HTTP 429" in d.reason and "X-RateLimit-Reset" in d.reason
    bare = decision(envelope(429, 7003))
    assert bare.wait == 60.0 and "no X-RateLimit-Reset" in bare.reason
    jittered = decide("PUT", "/contact/", envelope(429, 7003), attempt=1, elapsed=0, policy=RetryPolicy(),
                      settings=SETTINGS, rng=random.Random(3))
    assert 60.0 < jittered.wait <= 62.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_back_off_exponentially(status):
    waits = [decision(envelope(status, 1003, "Internal error"), attempt=n).wait for n in range(1, 9)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize("exc,ambiguous", [
    (httpx.ConnectError("refused", request=REQUEST), False),
    (httpx.ConnectTimeout("slow", request=REQUEST), False),
    (httpx.ReadTimeout("slow", request=REQUEST), True),
    (httpx.RemoteProtocolError("Server disconnected without sending a response.", request=REQUEST), True),
    (httpx.ReadError("reset", request=REQUEST), True),
    (httpx.DecodingError("bad gzip stream", request=REQUEST), True),
])
def test_transport_failures_are_retried_and_flag_an_unknown_outcome(exc, ambiguous):
    d = decision(exc, attempt=2)
    assert d.wait == 2 and d.error is None and d.ambiguous is ambiguous
    assert type(exc).__name__ in d.reason or "could not connect" in d.reason


@pytest.mark.parametrize("response,error", [
    (envelope(400, 1000, "batch too large"), RequestRejected),
    (envelope(401, 1, "Unauthorized"), AuthError),
    (httpx.Response(403, content=b"Forbidden"), PermissionDenied),
    (envelope(404, 3006, "No contact list found"), RequestRejected),
    (envelope(501, 1009, "not implemented"), RequestRejected),
    (envelope(500, 3005, "Contact list with the requested name already exists"), ContactListExists),
])
def test_client_errors_are_never_retried(response, error):
    d = decision(response)
    assert isinstance(d.error, error) and d.wait is None


def test_a_403_names_the_permission_of_the_endpoint():
    d = decide("POST", "/contact/getdata", httpx.Response(403, content=b"Forbidden"), attempt=1, elapsed=0,
               policy=POLICY, settings=SETTINGS)
    assert "contact.getdata" in str(d.error) and "'cid'" in str(d.error)


def test_a_body_that_is_not_the_envelope_is_retried():
    assert decision(httpx.Response(200, content=b"<html>proxy</html>")).wait == 1


def test_unsupported_url_is_a_configuration_error():
    d = decision(httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."))
    assert isinstance(d.error, EmarsysConfigError)


def test_a_wait_that_would_pass_the_total_time_gives_up_now():
    d = decision(envelope(503, 1003), attempt=3, elapsed=899.0)
    assert isinstance(d.error, TransientError) and "900s limit" in str(d.error)


# -- the loop, against the emulator ---------------------------------------------------------------

def test_503_bursts_are_retried_and_every_retry_is_logged_with_its_reason(emu, caplog):
    caplog.set_level(logging.INFO)
    emu.fault(type="status", status=503, path="/contact", count=3)
    with emu.client("oauth") as client:
        outcome = client.upsert_contacts(3, ["r@example.com"], encode_contacts(3, [{"3": "r@example.com"}]), True)
        assert outcome.acknowledged == ["r@example.com"] and client.retries == 3
    retries = [m for m in messages(caplog) if m.startswith("retrying in")]
    assert len(retries) == 3 and all("PUT /contact/: HTTP 503" in m for m in retries)
    assert "attempt 1 of 8 failed" in retries[0] and "attempt 3 of 8 failed" in retries[2]


def test_429_holds_every_request_until_the_reset_then_recovers(emu, caplog):
    caplog.set_level(logging.INFO)
    emu.fault(type="status", status=429, path="/field", count=2)
    with emu.client("wsse") as client:
        assert client.get_fields()
        sleeps = client.limiter.clock.sleeps          # the limiter waited (on its fake clock)
        assert len(sleeps) == 2 and all(59 <= s <= 64 for s in sleeps)   # 60 s, rounding, jitter
    assert any("HTTP 429 rate limited, waiting until X-RateLimit-Reset" in m for m in messages(caplog))
    assert [r["status"] for r in emu.requests_log() if r["path"].endswith("/field")] == [429, 429, 200]


def test_failures_that_outlast_the_attempts_are_transient_with_their_keys(emu):
    emu.fault(type="status", status=500, path="/contactlist", count=100)
    with emu.client("oauth") as client:
        with pytest.raises(TransientError) as err:
            client.add_to_list(1, 3, ["k1", "k2"])
    assert err.value.keys == ["k1", "k2"]
    assert "gave up after 5 attempts" in str(err.value) and "HTTP 500" in str(err.value)


def test_a_400_is_not_retried(emu):
    with emu.client("oauth") as client, pytest.raises(RequestRejected) as err:
        client.request("PUT", "/contact/", body=b'{"key_id": "3", "contacts": "nope"}')
    assert err.value.status == 400 and client.requests_sent == 1 and client.retries == 0


def test_a_requests_first_retry_is_a_warning_and_stamina_does_not_repeat_it(emu, caplog):
    """The first retry of a request says why at the default log level (a run waiting on Emarsys is not
    silent); the following ones are info; stamina's own warning would only repeat them."""
    caplog.set_level(logging.DEBUG)
    emu.fault(type="status", status=503, path="/field", count=2)
    with emu.client("oauth") as client:
        client.get_fields()
    assert not [r for r in caplog.records if r.name == "stamina"]
    assert [r.levelno for r in caplog.records if r.getMessage().startswith("retrying")] == \
        [logging.WARNING, logging.INFO]
