"""Scripted faults (the control API's `/_emulator/faults`, contracts item 1) and the timing settings:
read-after-write lag, server clock skew, token expiry. Each fault is checked over a real socket."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.emulator.conftest import Api, data, reply, wsse_header

CONTACT = {"3": "ada@example.com", "1": "Ada"}


def wait_until(predicate, timeout: float = 10.0):
    """Poll the emulator's state until `predicate()` is truthy (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("the emulator never reached the expected state")


def test_status_429_answers_7003_with_rate_limit_headers_and_no_retry_after(api, control):
    """§6 / §2.2: 429 with replyCode 7003, the three rate-limit headers, never Retry-After."""
    control.faults({"type": "status", "status": 429})
    response = api.get("/field")
    assert reply(response) == (429, 7003)
    assert response.headers["X-Ratelimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) > time.time()
    assert "X-RateLimit-Limit" in response.headers and "Retry-After" not in response.headers
    assert api.get("/field").status_code == 200   # count 1: the next request is normal


@pytest.mark.parametrize("status,code", [(500, 2011), (502, 1003), (503, 1003)])
def test_status_faults_answer_the_emarsys_envelope(v3, control, status, code):
    """§2.2 / §9: 500 (2011 database connection error), 502 and 503 in the Emarsys envelope."""
    control.faults({"type": "status", "status": status})
    response = v3.get("/field")
    assert reply(response) == (status, code)
    assert response.json()["data"] == ""


def test_faults_match_by_path_and_method_and_count_down(v3, control):
    """Contracts item 1: `path` is a substring of the request path, `method` filters, `count` N."""
    control.faults({"type": "status", "status": 503, "path": "/contact", "method": "PUT", "count": 2})
    assert v3.get("/field").status_code == 200
    assert v3.post("/contact/checkids", {"key_id": "3", "external_ids": []}).status_code == 200
    assert control.get("/faults")["faults"][0]["count"] == 2
    assert v3.upsert([CONTACT]).status_code == 503
    assert v3.upsert([CONTACT]).status_code == 503
    assert control.get("/faults") == {"faults": []}
    assert v3.upsert([CONTACT]).status_code == 200


def test_faults_can_be_listed_and_cleared(control):
    """Contracts item 1: GET lists pending faults, DELETE clears them."""
    control.faults({"type": "slow", "seconds": 1}, {"type": "drop", "path": "/field"})
    assert [f["type"] for f in control.get("/faults")["faults"]] == ["slow", "drop"]
    assert control.http.delete("/_emulator/faults").json() == {"faults": []}


def test_a_bad_fault_is_a_clear_400_and_adds_nothing(control):
    """Bad input to the control API answers 400 naming the problem and changes nothing."""
    response = control.http.post("/_emulator/faults", json={"faults": [
        {"type": "drop"}, {"type": "status", "status": 418}]})
    assert response.status_code == 400
    assert "faults[1]" in response.json()["error"] and "418" in response.json()["error"]
    assert control.get("/faults") == {"faults": []}


def test_unauthenticated_requests_do_not_consume_faults(emu, http, v3, control):
    """Faults apply to authenticated API requests: a 401 leaves the fault pending."""
    control.faults({"type": "status", "status": 500})
    assert reply(http.get("/api/v3/field")) == (401, 1)
    assert v3.get("/field").status_code == 500


def test_drop_closes_the_connection_before_processing(v3, control, emu):
    """Contracts item 1: `drop` closes the connection without answering, nothing is written."""
    control.faults({"type": "drop", "method": "PUT"})
    with pytest.raises(httpx.RemoteProtocolError):
        v3.upsert([CONTACT])
    assert control.get("/contacts") == []
    entry = control.get("/requests")[-1]
    assert entry["bytes"] > 0 and entry["time"] > 0
    assert entry | {"bytes": 0, "time": 0} == {
        "method": "PUT", "path": "/api/v3/contact/", "query": "create_if_not_exists=1", "status": None,
        "bytes": 0, "user": emu.emulator.config.client_id, "time": 0, "fault": "drop"}


def test_drop_after_write_processes_the_request_then_closes_the_connection(api, control):
    """Contracts item 1: the write happens, the client never hears of it."""
    control.faults({"type": "drop_after_write", "path": "/contact"})
    with pytest.raises(httpx.RemoteProtocolError):
        api.upsert([CONTACT])
    assert [c["3"] for c in control.get("/contacts")] == ["ada@example.com"]


def test_hang_outlasts_the_client_timeout_and_the_write_still_happens(emu, v3, control):
    """Contracts item 1: `hang` holds the request S seconds, then processes it normally."""
    control.faults({"type": "hang", "seconds": 1.0, "method": "PUT"})
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        v3.put("/contact/?create_if_not_exists=1", {"key_id": "3", "contacts": [CONTACT]}, timeout=0.3)
    assert time.monotonic() - started < 0.9
    assert control.get("/contacts") == []   # still held
    wait_until(lambda: control.get("/contacts"))


def test_slow_answers_normally_after_the_delay(api, control):
    """Contracts item 1: `slow` answers normally after S seconds."""
    control.faults({"type": "slow", "seconds": 0.4})
    started = time.monotonic()
    assert api.get("/field").status_code == 200
    assert time.monotonic() - started >= 0.4


def test_already_exists_fails_new_keys_with_2009_without_creating(api, control):
    """§3.3: concurrent upserts of a key can fail with 2009 "already exists" without creating."""
    control.seed(contacts=[{"3": "old@example.com"}])
    control.faults({"type": "already_exists"})
    body = data(api.upsert([{"3": "old@example.com", "1": "Old"}, {"3": "new@example.com"}]))
    assert body["errors"] == {"new@example.com": {"2009": "Contact with the external id already exists: 3"}}
    assert len(body["ids"]) == 1 and isinstance(body["ids"][0], str)
    assert sorted(c["3"] for c in control.get("/contacts")) == ["old@example.com"]
    assert data(api.upsert([{"3": "new@example.com"}]))["ids"][0] > 0   # the retry creates it


def test_the_token_endpoint_can_fail_too(emu, http, control):
    """Faults also apply to the token endpoint (an OAuth outage)."""
    control.faults({"type": "status", "status": 503, "path": "/oauth2/token"})
    config = emu.emulator.config
    form = {"grant_type": "client_credentials"}
    assert http.post("/oauth2/token", auth=(config.client_id, config.client_secret), data=form).status_code == 503
    assert http.post("/oauth2/token", auth=(config.client_id, config.client_secret), data=form).status_code == 200


def test_read_after_write_lag_hides_a_created_contact_and_races_its_upsert(v3, control):
    """§7.12 eventual consistency; §3.3 the race: a contact created within the lag is invisible to
    getdata (2008) and an upsert of its key fails with 2009 without creating a second one."""
    control.settings(read_after_write_lag=60)
    v3.upsert([CONTACT])
    body = data(v3.post("/contact/getdata", {"keyId": "3", "keyValues": ["ada@example.com"]}))
    assert body["result"] is False and body["errors"][0]["errorCode"] == "2008"
    assert list(v3.upsert([CONTACT]).json()["data"]["errors"]["ada@example.com"]) == ["2009"]
    assert len(control.get("/contacts")) == 1
    control.settings(clock_skew=61)   # the server's clock jumps past the lag
    assert data(v3.post("/contact/getdata", {"keyId": "3", "keyValues": ["ada@example.com"]}))["result"]


def test_clock_skew_moves_the_wsse_window_and_the_date_header(emu, http, control):
    """§1.2: Created must be within 5 minutes of the server's clock (401 "Unauthorized Time frame
    is invalid" otherwise); the Date header shows the server's clock to detect drift."""
    control.settings(clock_skew=600)
    config = emu.emulator.config
    now = http.get("/api/v2/field", headers={"X-WSSE": wsse_header(config.username, config.secret)})
    assert reply(now) == (401, 1)
    assert now.json()["replyText"] == "Unauthorized Time frame is invalid"
    server_now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    ahead = http.get("/api/v2/field", headers={"X-WSSE": wsse_header(config.username, config.secret,
                                                                       created=server_now)})
    assert ahead.status_code == 200
    from email.utils import parsedate_to_datetime
    assert abs(parsedate_to_datetime(ahead.headers["Date"]).timestamp() - (time.time() + 600)) < 5


def test_token_ttl_is_expires_in_and_an_expired_token_is_401_replycode_1(emu, http, control):
    """§1.3: expires_in as configured; an expired token on v3 gives 401 replyCode 1."""
    control.settings(token_ttl=120)
    config = emu.emulator.config
    api = Api(http, "oauth", config.client_id, config.client_secret)
    token = http.post("/oauth2/token", auth=(config.client_id, config.client_secret),
                      data={"grant_type": "client_credentials"}).json()
    assert token["expires_in"] == 120 and token["token_type"] == "Bearer"
    assert api.get("/field").status_code == 200
    control.settings(clock_skew=121)
    assert reply(api.get("/field")) == (401, 1)


def test_tokens_expire_on_demand(v3, control):
    """Contracts item 1: POST /_emulator/tokens/expire invalidates every issued token."""
    assert v3.get("/field").status_code == 200
    assert control.post("/tokens/expire")["expired"] >= 1
    assert reply(v3.get("/field")) == (401, 1)
