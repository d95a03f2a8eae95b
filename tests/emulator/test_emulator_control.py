"""The control API under /_emulator/ (contracts item 1): settings, seed, reset, inspection of
contacts, lists and requests. No auth, JSON, bad input -> 400 naming the problem."""

from __future__ import annotations

from tests.emulator.conftest import Api, data, reply


def test_health(http, emu):
    """GET /_emulator/health once the server is ready."""
    assert http.get("/_emulator/health").json() == {"status": "ok"}


def test_settings_show_the_hostile_defaults_of_the_open_questions(control):
    """§10: every open question is a setting whose default is the more hostile choice."""
    expected = {
        "token_ttl": 3600, "read_after_write_lag": 0.0, "clock_skew": 0.0,
        "cross_scheme_auth": False, "v3_contact_ids": False, "rate_limit_window": "sliding",
        "rate_limit_reply": "envelope", "shuffle_ids": True, "all_rows_failed_status": 400,
        "duplicate_keys_in_batch": "reject", "email_case_sensitive": True, "email_trim_whitespace": False,
        "empty_string_clears": True, "truncate_text": False, "string_field_ids": False,
        "strict_list_names": True, "count_existing_members": False, "delete_reports_count": False,
        "multiple_ids_shape": "mixed", "reject_reused_nonce": True, "forbidden_body": "plain"}
    assert expected.items() <= control.get("/settings").items()


def test_settings_change_at_run_time_and_bad_ones_change_nothing(control, http):
    """Contracts item 1: POST /_emulator/settings; an unknown setting or a wrong type is a 400
    naming it, and none of the request's changes apply."""
    assert control.settings(truncate_text=True, rate_limit=5)["truncate_text"] is True
    response = http.post("/_emulator/settings", json={"rate_limit": 7, "no_such_setting": 1})
    assert response.status_code == 400 and "no_such_setting" in response.json()["error"]
    response = http.post("/_emulator/settings", json={"email_case_sensitive": "yes"})
    assert response.status_code == 400 and "email_case_sensitive" in response.json()["error"]
    assert control.get("/settings")["rate_limit"] == 5


def test_email_matching_follows_the_setting_at_run_time(api, control):
    """§10.6: email key case sensitivity is open: case-sensitive by default, switchable at run time
    (values are stored as sent)."""
    control.seed(contacts=[{"3": "Ada@Example.com"}])
    body = data(api.upsert([{"3": "ada@example.com"}, {"3": "bob@example.com"}]))
    assert sorted(type(i).__name__ for i in body["ids"]) == ["int", "int"]   # a second Ada was created
    control.settings(email_case_sensitive=False)
    body = api.upsert([{"3": "ADA@EXAMPLE.COM"}, {"3": "bob@example.com"}]).json()["data"]
    assert list(body["errors"]["ADA@EXAMPLE.COM"]) == ["2010"]   # now both Adas match
    assert sorted(c["3"] for c in control.get("/contacts")) == [
        "Ada@Example.com", "ada@example.com", "bob@example.com"]


def test_email_whitespace_is_significant_unless_switched(api, control):
    """§10.6: whitespace handling of email keys is open: significant by default."""
    control.seed(contacts=[{"3": "ada@example.com"}])
    assert isinstance(data(api.upsert([{"3": " ada@example.com "}, {"3": "x@example.com"}]))["ids"][0], int)
    control.http.post("/_emulator/reset")
    control.seed(contacts=[{"3": "ada@example.com"}])
    control.settings(email_trim_whitespace=True)
    assert data(api.upsert([{"3": " ada@example.com "}]))["ids"] == [str(control.get("/contacts")[0]["id"])]


def test_seed_preloads_fields_contacts_lists_and_users(emu, http, control):
    """Contracts item 1: POST /_emulator/seed (contacts, lists, custom fields, API users)."""
    out = control.seed(
        fields=[{"id": 6001, "name": "Shoe Size", "application_type": "numeric", "string_id": "shoe_size"}],
        contacts=[{"3": "a@example.com", "6001": "42"}, {"3": "a@example.com", "uid": "fixed-uid"}],
        lists=[{"name": "Seeded", "members": ["fixed-uid"], "key_id": "uid"}],
        users=[{"name": "readonly", "secret": "s3cret", "scheme": "oauth", "permissions": ["field.get"]}])
    assert out["fields"] == [6001] and len(out["contacts"]) == 2 and out["users"] == ["readonly"]
    contacts = control.get("/contacts")
    assert contacts[0]["6001"] == "42" and contacts[1]["uid"] == "fixed-uid"
    assert control.get("/lists")[0] | {"created": ""} == {
        "id": out["lists"][0]["id"], "name": "Seeded", "description": "", "created": "",
        "contact_ids": [out["contacts"][1]], "emails": ["a@example.com"]}
    readonly = Api(http, "oauth", "readonly", "s3cret")
    assert {"id": 6001, "name": "Shoe Size", "application_type": "numeric", "string_id": "shoe_size"} in \
        data(readonly.get("/field"))


def test_a_bad_seed_is_a_400_naming_the_entry_and_applies_nothing(control, http):
    """Bad input answers 400 `{"error": ...}` naming the entry, and changes nothing."""
    response = http.post("/_emulator/seed", json={
        "contacts": [{"3": "ok@example.com"}, {"3": "b@example.com", "4": "31.12.1990"}]})
    assert response.status_code == 400
    assert "contacts[1]" in response.json()["error"] and "YYYY-MM-DD" in response.json()["error"]
    assert control.get("/contacts") == []
    response = http.post("/_emulator/seed", json={"lists": [{"name": "L", "members": ["nobody@example.com"]}]})
    assert response.status_code == 400 and "nobody@example.com" in response.json()["error"]
    assert http.post("/_emulator/seed", json={"colours": []}).status_code == 400


def test_reset_goes_back_to_the_state_at_start(api, control):
    """Contracts item 1: POST /_emulator/reset clears contacts, lists, faults, requests, settings."""
    control.seed(contacts=[{"3": "a@example.com"}], lists=[{"name": "L"}],
                 fields=[{"id": 7000, "name": "X", "application_type": "date"}])
    control.settings(truncate_text=True)
    control.faults({"type": "slow", "seconds": 9})
    control.post("/reset")
    assert control.get("/contacts") == [] and control.get("/lists") == []
    assert control.get("/faults") == {"faults": []} and control.get("/requests") == []
    assert control.get("/settings")["truncate_text"] is False
    assert 7000 not in [int(f["id"]) for f in data(api.get("/field"))]


def test_requests_log_method_path_status_bytes_user_time_and_keys(api, control, emu):
    """Contracts item 1: GET /_emulator/requests -> [{method, path, status, bytes, user, time, keys?}];
    DELETE clears it."""
    control.http.delete("/_emulator/requests")
    response = api.upsert([{"3": "a@example.com"}, {"3": "b@example.com"}])
    api.get("/field")
    upsert, fields = control.get("/requests")[-2:]
    user = emu.emulator.config.client_id if api.scheme == "oauth" else emu.emulator.config.username
    assert upsert["method"] == "PUT" and upsert["path"] == f"{api.root}/contact/"
    assert upsert["status"] == 200 and upsert["user"] == user
    assert upsert["bytes"] == len(response.request.content) and upsert["time"] > 0
    assert upsert["keys"] == ["a@example.com", "b@example.com"]
    assert fields["bytes"] == 0 and "keys" not in fields
    assert control.http.delete("/_emulator/requests").status_code == 200
    assert control.get("/requests") == []


def test_contacts_inspection_format(api, control):
    """GET /_emulator/contacts: objects keyed by field id string, plus integer `id` and `uid`."""
    api.upsert([{"3": "a@example.com", "1": "Ada", "5003": "2", "5005": ["1", "3"], "31": 1}])
    (contact,) = control.get("/contacts")
    assert isinstance(contact["id"], int) and isinstance(contact["uid"], str)
    assert {k: v for k, v in contact.items() if k not in ("id", "uid")} == {
        "1": "Ada", "3": "a@example.com", "31": 1, "5003": 2, "5005": [1, 3]}


def test_control_routes_are_not_api_routes(http, emu):
    """The control API needs no auth, while the API itself does (401 replyCode 1)."""
    assert http.get("/_emulator/contacts").status_code == 200
    assert reply(http.get("/api/v3/field")) == (401, 1)
