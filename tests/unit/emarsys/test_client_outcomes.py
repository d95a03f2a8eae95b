"""Per-key outcomes from every shape Emarsys gives them, matched by key value, never by position.

The emulator answers in one shape per endpoint; these tests feed the client the other shapes seen in
the wild (emarsys-api.md §3.4, §7.2) through a small fake server."""

from __future__ import annotations

import httpx
import orjson
import pytest
import stamina
from hypothesis import given, settings
from hypothesis import strategies as st

from dbt_emarsys_sync.emarsys import (EmarsysClient, EmarsysSettings, RateLimiter, RequestRejected,
                                      TransientError, encode_contacts)
from dbt_emarsys_sync.emarsys.client import _per_key_outcome
from dbt_emarsys_sync.emarsys.wire import key_errors

KEYS = ["a@x.com", "b@x.com", "c@x.com"]


def fake_emarsys(data, status: int = 200, reply_code: int = 0, seen: list | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "tok", "token_type": "Bearer", "expires_in": 3600})
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, json={"replyCode": reply_code, "replyText": "OK" if not reply_code else "No",
                                            "data": data})
    return httpx.MockTransport(handler)


def client_for(transport) -> EmarsysClient:
    settings = EmarsysSettings(api_url="http://fake.invalid", scheme="oauth",
                               auth_url="http://fake.invalid/oauth2/token", client_id="id", client_secret="s")
    return EmarsysClient(settings, transport=transport, limiter=RateLimiter(0))


def upsert(data, keys=KEYS, **kw):
    with client_for(fake_emarsys(data, **kw)) as client:
        body = encode_contacts(3, [{"3": k} for k in keys])
        return client.upsert_contacts(3, keys, body, create=True)


@pytest.mark.parametrize("errors", [{}, [], None, "absent"])
def test_clean_batches_in_every_shape_acknowledge_every_key(errors):
    data = {"ids": [1, "2", 3]}
    if errors != "absent":
        data["errors"] = errors
    outcome = upsert(data)
    assert outcome.acknowledged == KEYS and outcome.rejected == {}


def test_object_errors_reject_by_key_value_and_mixed_ids_count_created_and_updated():
    # `ids` holds fewer entries than keys and in no particular order: only `errors` names failures.
    outcome = upsert({"ids": ["200", 301], "errors": {"b@x.com": {"2008": "No contact found"}}})
    assert outcome.acknowledged == ["a@x.com", "c@x.com"]
    assert outcome.rejected == {"b@x.com": (2008, "No contact found")}
    assert (outcome.created, outcome.updated) == (1, 1)


def test_array_errors_and_plain_messages_are_understood():
    outcome = upsert({"ids": [], "errors": [{"key": "c@x.com", "errorCode": "2010", "errorMsg": "More contacts"},
                                            {"key": "a@x.com", "errorCode": 2007, "errorMsg": "Invalid date"}]})
    assert outcome.rejected == {"c@x.com": (2010, "More contacts"), "a@x.com": (2007, "Invalid date")}
    assert outcome.acknowledged == ["b@x.com"]
    assert key_errors({"a@x.com": "plain message"}) == {"a@x.com": (None, "plain message")}
    assert key_errors({"a": {"2007": "bad date", "2006": "bad field"}}) == {"a": (2007, "bad date; bad field")}
    assert key_errors([{"a": {"2008": "nope"}}]) == {"a": (2008, "nope")}


def test_numeric_keys_match_whatever_json_type_the_error_key_has():
    outcome = upsert({"errors": [{"key": 1002, "errorCode": 2008, "errorMsg": "x"}]}, keys=["1001", "1002"])
    assert outcome.rejected == {"1002": (2008, "x")} and outcome.acknowledged == ["1001"]


def test_an_error_echoed_with_other_case_still_matches_its_key_and_strays_are_kept_apart():
    outcome = upsert({"errors": {"A@X.com": {"2008": "x"}, "stray@x.com": {"2008": "y"}}})
    assert outcome.rejected == {"a@x.com": (2008, "x")}
    assert outcome.unmatched_errors == {"stray@x.com": (2008, "y")}
    assert outcome.acknowledged == ["b@x.com", "c@x.com"]


def test_getdata_result_false_is_an_empty_result_with_its_errors():
    with client_for(fake_emarsys({"result": False, "errors": [
            {"key": "zz", "errorCode": "2008", "errorMsg": "No contact found"}]})) as client:
        rows, errors = client.get_contacts(3, ["zz"], [1])
    assert rows == [] and errors == {"zz": (2008, "No contact found")}


def test_getdata_sends_camel_case_and_unique_keys():
    seen: list[httpx.Request] = []
    with client_for(fake_emarsys({"result": [{"id": "1", "3": "a"}], "errors": []}, seen=seen)) as client:
        rows, errors = client.get_contacts("3", ["a", "a", "b"], [1, 3])
    assert orjson.loads(seen[0].content) == {"keyId": "3", "keyValues": ["a", "b"], "fields": [1, 3]}
    assert rows == [{"id": "1", "3": "a"}] and errors == {}


def test_list_member_outcomes_accept_empty_array_errors():
    with client_for(fake_emarsys({"inserted_contacts": 2, "errors": []})) as client:
        outcome = client.add_to_list(5, 3, ["a", "b"])
    assert outcome.acknowledged == ["a", "b"] and not outcome.rejected


def test_an_http_200_error_rejects_the_request_without_retrying():
    seen: list[httpx.Request] = []
    with client_for(fake_emarsys("", reply_code=2004, seen=seen)) as client, pytest.raises(RequestRejected) as err:
        client.upsert_contacts(3, ["a"], encode_contacts(3, [{"3": "a"}]), create=True)
    assert err.value.reply_code == 2004 and len(seen) == 1


def test_a_request_failing_as_a_whole_marks_its_keys_failed_retryable():
    seen: list[httpx.Request] = []
    with stamina.set_testing(True, attempts=3), client_for(fake_emarsys("", status=503, reply_code=1003,
                                                                       seen=seen)) as client:
        with pytest.raises(TransientError) as err:
            client.upsert_contacts(3, KEYS, encode_contacts(3, [{"3": k} for k in KEYS]), create=True)
    assert err.value.keys == KEYS
    assert "HTTP 503" in str(err.value) and len(seen) == 3


def test_a_key_twice_in_one_request_is_refused():
    with client_for(fake_emarsys({})) as client, pytest.raises(ValueError, match="twice"):
        client.upsert_contacts(3, ["a", "b", "a"], b"{}", create=True)


key_lists = st.lists(st.one_of(st.from_regex(r"[a-z0-9.]{1,10}@[a-z]{1,8}\.com", fullmatch=True),
                               st.integers(0, 10 ** 12).map(str)), unique=True, max_size=15)


@settings(max_examples=150, deadline=None)
@given(keys=key_lists, data=st.data())
def test_every_key_ends_acknowledged_or_rejected_exactly_once(keys, data):
    failed = data.draw(st.lists(st.sampled_from(keys), unique=True) if keys else st.just([]))
    shape = data.draw(st.sampled_from(["object", "array", "plain"]))
    if shape == "object":
        errors: object = {k: {"2008": "No contact found"} for k in failed}
    elif shape == "array":
        errors = [{"key": int(k) if k.isdigit() else k, "errorCode": "2010", "errorMsg": "More contacts"}
                  for k in failed]
    else:
        errors = {k: "message" for k in failed}
    if not failed:
        errors = data.draw(st.sampled_from([{}, [], None]))
    outcome = _per_key_outcome(keys, errors)
    assert set(outcome.acknowledged) | set(outcome.rejected) == set(keys)
    assert not set(outcome.acknowledged) & set(outcome.rejected)
    assert set(outcome.rejected) == set(failed) and not outcome.unmatched_errors


def test_a_split_list_call_whose_second_request_fails_marks_every_key_retryable():
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 3600})
        calls.append(len(orjson.loads(request.content)["external_ids"]))
        if len(calls) == 1:
            return httpx.Response(200, json={"replyCode": 0, "replyText": "OK", "data": {"errors": []}})
        return httpx.Response(503, json={"replyCode": 1003, "replyText": "down", "data": ""})

    keys = [f"k{i}" for i in range(10_001)]
    with stamina.set_testing(True, attempts=2), client_for(httpx.MockTransport(handler)) as client:
        with pytest.raises(TransientError) as err:
            client.add_to_list(7, 3, keys)
    assert calls == [10_000, 1, 1] and err.value.keys == keys
