"""Contacts (emarsys-api.md §3): create, update/upsert, getdata, checkids, delete, query; keys,
per-key errors, value validation (§4.5, §4.6) and limits."""

from __future__ import annotations

import pytest

from tests.emulator.conftest import data, reply


def emails(control) -> list[str]:
    return sorted(c.get("3") for c in control.get("/contacts"))


# -- create: POST /contact (§3.2) ----------------------------------------------------------------


def test_create_batch_returns_integer_ids_and_2009_for_existing_keys(api, control):
    """§3.2: POST batch -> ids (integers) and errors keyed by key value {code: message}."""
    control.seed(contacts=[{"3": "b@x.com"}])
    body = data(api.post("/contact", {"key_id": "3", "contacts": [{"3": "a@x.com", "2": "A"}, {"3": "b@x.com"}]}))
    assert len(body["ids"]) == 1 and isinstance(body["ids"][0], int)
    assert body["errors"] == {"b@x.com": {"2009": "Contact with the external id already exists: 3"}}
    assert emails(control) == ["a@x.com", "b@x.com"]


def test_create_single_object_form_answers_data_id_and_2009_as_a_request_error(api, control):
    """§3.2: single contact (flat object) -> data.id; an existing key -> HTTP 400 with 2009."""
    body = data(api.post("/contact", {"key_id": "3", "3": "john@example.com", "1": "John"}))
    assert isinstance(body["id"], int)
    assert reply(api.post("/contact", {"key_id": "3", "3": "john@example.com"})) == (400, 2009)


def test_create_refuses_id_or_uid_as_key_and_as_a_field(api):
    """§3.1: id/uid as key on creation -> 400 2004; setting id/uid on create -> 2007 per contact."""
    assert reply(api.post("/contact", {"key_id": "id", "contacts": [{"id": "1"}]})) == (400, 2004)
    body = api.post("/contact", {"key_id": "3", "contacts": [{"3": "a@x.com", "id": 5}, {"3": "b@x.com"}]})
    assert data(body)["errors"] == {"a@x.com": {"2007": "Cannot set id or uid on contact creation"}}


def test_create_adds_to_contact_list_id_and_an_unknown_list_is_2020(api, control):
    """§3.2: contact_list_id adds the request's contacts to that list; a missing list -> 2020."""
    list_id = control.seed(lists=[{"name": "New"}])["lists"][0]["id"]
    api.post("/contact", {"key_id": "3", "contact_list_id": list_id, "contacts": [{"3": "a@x.com"}]})
    assert control.get("/lists")[0]["emails"] == ["a@x.com"]
    assert reply(api.post("/contact", {"key_id": "3", "contact_list_id": 1, "contacts": [{"3": "c@x.com"}]})) \
        == (400, 2020)


# -- update / upsert: PUT /contact (§3.3) -----------------------------------------------------------


def test_upsert_returns_strings_for_existing_and_integers_for_created(api, control):
    """§3.3: with create_if_not_exists=1 an existing contact's id is a string, a created one an int."""
    existing = control.seed(contacts=[{"3": "old@x.com"}])["contacts"][0]
    body = data(api.upsert([{"3": "old@x.com", "1": "Old"}, {"3": "new@x.com", "1": "New"}]))
    created = next(c["id"] for c in control.get("/contacts") if c["3"] == "new@x.com")
    assert sorted(body["ids"], key=str) == sorted([str(existing), created], key=str)
    assert body["errors"] == []


def test_update_only_reports_missing_contacts_as_2008(api, control):
    """§3.3: create_if_not_exists=0 -> 2008 per missing key, nothing created."""
    control.seed(contacts=[{"3": "old@x.com"}])
    body = data(api.upsert([{"3": "old@x.com"}, {"3": "ghost@x.com"}], create=False))
    assert body["errors"] == {"ghost@x.com": {"2008": "No contact found with the external id: 3 - ghost@x.com"}}
    assert emails(control) == ["old@x.com"]


def test_put_single_object_form_answers_data_id(api, control):
    """§3.3: the single-object form `{"key_id": "3", "3": ...}` -> data.id; errors request-level."""
    body = data(api.put("/contact/?create_if_not_exists=1", {"key_id": "3", "3": "one@x.com", "1": "One"}))
    assert isinstance(body["id"], int)
    assert data(api.put("/contact", {"key_id": "3", "3": "one@x.com", "2": "Later"}))["id"] == str(body["id"])
    assert reply(api.put("/contact", {"key_id": "3", "3": "nobody@x.com"})) == (400, 2008)


def test_put_leaves_omitted_fields_untouched_and_null_or_empty_clears(api, control):
    """§3.3 / §4.6: omitted fields are not changed; null and "" clear (empty_string_clears)."""
    control.seed(contacts=[{"3": "a@x.com", "1": "Ada", "2": "Lovelace", "11": "London", "31": 1}])
    api.upsert([{"3": "a@x.com", "2": None, "11": ""}, {"3": "z@x.com"}])
    contact = next(c for c in control.get("/contacts") if c["3"] == "a@x.com")
    assert contact.get("1") == "Ada" and contact.get("31") == 1
    assert "2" not in contact and "11" not in contact


def test_empty_string_leaves_the_value_when_switched(api, control):
    """§10.7: `""` vs null is open: with empty_string_clears off, "" leaves the field unchanged."""
    control.seed(contacts=[{"3": "a@x.com", "1": "Ada"}])
    control.settings(empty_string_clears=False)
    api.upsert([{"3": "a@x.com", "1": ""}, {"3": "z@x.com"}])
    assert next(c for c in control.get("/contacts") if c["3"] == "a@x.com")["1"] == "Ada"


def test_shared_email_is_2010_and_can_be_updated_by_id_or_uid(api, control):
    """§3.1 / §7.3: non-unique emails give 2010 per key; id and uid keys still update."""
    ids = control.seed(contacts=[{"3": "twin@x.com"}, {"3": "twin@x.com", "uid": "twin-b"}])["contacts"]
    body = api.upsert([{"3": "twin@x.com", "1": "T"}]).json()["data"]
    assert list(body["errors"]["twin@x.com"]) == ["2010"]
    assert data(api.upsert([{"id": ids[0], "1": "First"}], key_id="id", create=False))["ids"] == [str(ids[0])]
    assert data(api.upsert([{"uid": "twin-b", "1": "Second"}], key_id="uid", create=False))["ids"] == [str(ids[1])]
    names = {c["id"]: c.get("1") for c in control.get("/contacts")}
    assert names == {ids[0]: "First", ids[1]: "Second"}


def test_upsert_by_id_with_create_is_2004(api):
    """§3.1: id/uid cannot key a creation: create_if_not_exists=1 with key_id id -> 400 2004."""
    assert reply(api.upsert([{"id": 1}], key_id="id", create=True)) == (400, 2004)


def test_key_by_string_id_and_by_a_custom_indexed_field(api, control):
    """§3.1: key_id may be a field's string id ("email") or an indexed custom field; a field
    without an index -> 2015; an unknown field -> 2004."""
    body = data(api.upsert([{"3": "s@x.com", "5002": "C-1"}, {"3": "t@x.com", "5002": "C-2"}], key_id="email"))
    assert len(body["ids"]) == 2
    body = data(api.upsert([{"5002": "C-1", "1": "Sam"}, {"5002": "C-3", "3": "s@x.com"}], key_id="customer_id"))
    assert sorted(type(i).__name__ for i in body["ids"]) == ["int", "str"]
    assert emails(control) == ["s@x.com", "s@x.com", "t@x.com"]   # a second s@x.com: emails need not be unique
    assert reply(api.upsert([{"1": "x"}], key_id="1")) == (400, 2015)
    assert reply(api.upsert([{"3": "x"}], key_id="no_such_field")) == (400, 2004)


def test_string_ids_inside_contacts_are_refused_unless_switched(api, control):
    """§10.8: string field ids as keys inside contacts[] are open: refused (2006) by default."""
    body = api.upsert([{"3": "a@x.com", "first_name": "Ada"}]).json()
    assert body["data"]["errors"] == {"a@x.com": {"2006": "Invalid field id: first_name"}}
    control.settings(string_field_ids=True)
    data(api.upsert([{"email": "a@x.com", "first_name": "Ada"}], key_id="email"))
    assert control.get("/contacts")[0]["1"] == "Ada"


def test_a_row_without_a_key_value_is_2005(api):
    """§2.3: 2005 No value provided for key field."""
    body = data(api.upsert([{"1": "No key"}, {"3": "a@x.com"}]))
    assert body["errors"] == {"": {"2005": "No value provided for key field: 3"}}


def test_when_every_row_fails_the_batch_is_a_400_unless_switched(api, control):
    """§10.4: the answer when all rows of a batch fail is open: HTTP 400 with the first error's
    replyCode (and the per-key errors in data) by default, or HTTP 200."""
    response = api.upsert([{"3": "bad@x.com", "4": "1.1.1990"}])
    assert reply(response) == (400, 2007)
    assert list(response.json()["data"]["errors"]) == ["bad@x.com"]
    control.settings(all_rows_failed_status=200)
    response = api.upsert([{"3": "bad@x.com", "4": "1.1.1990"}])
    assert reply(response) == (200, 0) and response.json()["data"]["ids"] == []


def test_ids_do_not_follow_the_order_of_contacts_unless_switched(api, control):
    """§3.3 / §10.4: the order of ids is not tied to contacts[]: by default it is rotated."""
    rows = [{"3": f"u{i}@x.com"} for i in range(20)]
    ids = data(api.upsert(rows))["ids"]
    assert sorted(ids) == ids[ids.index(min(ids)):] + ids[:ids.index(min(ids))] and ids != sorted(ids)
    control.settings(shuffle_ids=False)
    ids = data(api.upsert([{"3": f"v{i}@x.com"} for i in range(20)]))["ids"]
    assert ids == sorted(ids)


@pytest.mark.parametrize("policy,expected", [("reject", None), ("last_wins", "Second"), ("first_wins", "First")])
def test_duplicate_keys_in_one_batch(api, control, policy, expected):
    """§7.4 / §10.5: duplicate keys inside one batch are open: rejected (2009) by default."""
    control.settings(duplicate_keys_in_batch=policy)
    response = api.upsert([{"3": "d@x.com", "1": "First"}, {"3": "d@x.com", "1": "Second"}, {"3": "e@x.com"}])
    contacts = {c["3"]: c for c in control.get("/contacts")}
    if expected is None:
        assert list(data(response)["errors"]["d@x.com"]) == ["2009"]
        assert "d@x.com" not in contacts
    else:
        assert data(response)["errors"] == [] and contacts["d@x.com"]["1"] == expected


def test_batch_over_1000_is_400_1000(api):
    """§3.2 / §3.3: more than 1000 contacts per call -> 400 replyCode 1000."""
    rows = [{"3": f"u{i}@x.com"} for i in range(1001)]
    assert reply(api.upsert(rows)) == (400, 1000)
    assert reply(api.post("/contact", {"key_id": "3", "contacts": rows})) == (400, 1000)


def test_payload_limits_8mb_for_put_and_10mb_for_post(api):
    """§6: payload caps 8 MB for update (PUT), 10 MB for create (POST)."""
    notes = "n" * 9_000
    rows = [{"3": f"u{i}@x.com", "5006": notes} for i in range(1000)]   # ~9 MB
    assert api.upsert(rows).status_code == 413
    assert data(api.post("/contact", {"key_id": "3", "contacts": rows}))["errors"] == []


def test_invalid_json_is_1010(api):
    """§2.3: 1010 invalid request payload (not JSON)."""
    assert reply(api.request("PUT", "/contact", content=b"{not json")) == (400, 1010)


# -- value validation (§4.5) ----------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("4", "1990-02-30"), ("4", "1990-01-01 10:00"), ("40", 19900101),   # dates: YYYY-MM-DD only
    ("31", True), ("31", "true"), ("31", 3),                            # opt-in: 1, 2 or null
    ("5", "99"), ("5", [1]),                                            # single choice: a choice id
    ("5005", []), ("5005", ["1", "99"]), ("5005", "1"),                 # multi choice: non-empty array of ids
    ("5001", "12abc"), ("5001", True),                                  # numeric
    ("1", "x" * 61), ("10", "y" * 256),                                 # shorttext 60, longtext 255
    ("32", "1"),                                                        # read-only system field
])
def test_invalid_values_reject_the_contact_with_2007(api, control, field, value):
    """§4.5 / §2.3: a value a field can't take rejects that contact with 2007; others go through."""
    body = data(api.upsert([{"3": "bad@x.com", field: value}, {"3": "good@x.com"}]))
    assert list(body["errors"]) == ["bad@x.com"] and list(body["errors"]["bad@x.com"]) == ["2007"]
    assert emails(control) == ["good@x.com"]


def test_an_unknown_field_is_2006(api):
    """§2.3: 2006 Invalid field id."""
    assert data(api.upsert([{"3": "a@x.com", "99999": "x"}, {"3": "b@x.com"}]))["errors"] == {
        "a@x.com": {"2006": "Invalid field id: 99999"}}


def test_valid_values_of_every_type_are_stored(api, control):
    """§4.5: dates YYYY-MM-DD, opt-in 1/2, choice ids, multichoice arrays, numerics, text."""
    api.upsert([{"3": "a@x.com", "4": "1990-12-31", "31": "2", "5": 2, "5005": ["1", 2], "5001": 0.5,
                 "1": "x" * 60}])
    contact = control.get("/contacts")[0]
    assert (contact["4"], contact["31"], contact["5"], contact["5005"], contact["5001"]) == (
        "1990-12-31", 2, 2, [1, 2], "0.5")


def test_over_length_text_is_cut_when_truncate_text_is_on(api, control):
    """§10.7: over-length text is rejected by default, cut to the limit with truncate_text."""
    control.settings(truncate_text=True)
    api.upsert([{"3": "a@x.com", "1": "x" * 70}])
    assert control.get("/contacts")[0]["1"] == "x" * 60


# -- reads: getdata, checkids, query (§3.5 - §3.7) ---------------------------------------------------


def test_getdata_uses_camelcase_and_answers_strings_and_an_errors_array(api, control):
    """§3.5: keyId/keyValues/fields; result values and ids as strings; errors an array of
    {key, errorCode, errorMsg}."""
    (cid,) = control.seed(contacts=[{"3": "a@x.com", "1": "Tony", "31": 1}])["contacts"]
    body = data(api.post("/contact/getdata", {"keyId": "3", "keyValues": ["a@x.com", "b@x.com"],
                                               "fields": [1, 3, 31]}))
    uid = control.get("/contacts")[0]["uid"]
    assert body["result"] == [{"1": "Tony", "3": "a@x.com", "31": "1", "id": str(cid), "uid": uid}]
    assert body["errors"] == [{"key": "b@x.com", "errorCode": "2008",
                               "errorMsg": "No contact found with the external id: 3"}]


def test_getdata_result_is_false_when_no_key_gives_a_contact(api):
    """§3.5: `result` is false, not an array, when every identifier fails."""
    body = data(api.post("/contact/getdata", {"keyId": "id", "keyValues": ["abc", ""], "fields": [1]}))
    assert body["result"] is False and len(body["errors"]) == 2


def test_getdata_without_fields_returns_all_fields_and_keys_by_id(api, control):
    """§3.5: empty/missing fields returns all fields; keyId may be "id"; 2010 for a shared key."""
    ids = control.seed(contacts=[{"3": "t@x.com"}, {"3": "t@x.com"}])["contacts"]
    body = data(api.post("/contact/getdata", {"keyId": "id", "keyValues": [ids[0]]}))
    assert len(body["result"][0]) > 40 and body["result"][0]["id"] == str(ids[0])
    body = data(api.post("/contact/getdata", {"keyId": "3", "keyValues": ["t@x.com"]}))
    assert body["errors"][0]["errorCode"] == "2010"


def test_getdata_limits_and_validation(api):
    """§3.5 / §2.3: at most 1000 keys; missing or non-array parameters -> 400 10001."""
    assert reply(api.post("/contact/getdata", {"keyId": "3", "keyValues": ["a"] * 1001})) == (400, 10001)
    assert reply(api.post("/contact/getdata", {"keyId": "3"})) == (400, 10001)
    assert reply(api.post("/contact/getdata", {"keyId": "3", "keyValues": "a"})) == (400, 10001)


def test_checkids_maps_values_to_string_ids(api, control):
    """§3.6: ids is an object value -> id string; errors keyed by value (2008, 2010)."""
    ids = control.seed(contacts=[{"3": "a@x.com"}, {"3": "t@x.com"}, {"3": "t@x.com"}])["contacts"]
    body = data(api.post("/contact/checkids", {"key_id": "3", "external_ids": ["a@x.com", "c@x.com", "t@x.com"]}))
    assert body["ids"] == {"a@x.com": str(ids[0])}
    assert list(body["errors"]["c@x.com"]) == ["2008"] and list(body["errors"]["t@x.com"]) == ["2010"]


@pytest.mark.parametrize("shape", ["mixed", "list"])
def test_checkids_get_multiple_ids(api, control, shape):
    """§3.6 / §10.10: the get_multiple_ids shape is open: a string for one match and a list for
    several by default ("mixed"), or always a list."""
    ids = control.seed(contacts=[{"3": "a@x.com"}, {"3": "t@x.com"}, {"3": "t@x.com"}])["contacts"]
    control.settings(multiple_ids_shape=shape)
    body = data(api.post("/contact/checkids", {"key_id": "3", "external_ids": ["a@x.com", "t@x.com"],
                                                "get_multiple_ids": True}))
    one = str(ids[0]) if shape == "mixed" else [str(ids[0])]
    assert body == {"ids": {"a@x.com": one, "t@x.com": [str(ids[1]), str(ids[2])]}, "errors": []}


def test_checkids_limits(api):
    """§3.6: max 1000 (2002); a non-array -> 2003."""
    assert reply(api.post("/contact/checkids", {"key_id": "3", "external_ids": ["a"] * 1001})) == (400, 2002)
    assert reply(api.post("/contact/checkids", {"key_id": "3", "external_ids": "a"})) == (400, 2003)


def test_query_filters_on_an_indexed_field_and_pages(api, control):
    """§3.7: ?{field}={value}&return=; return required (2014); filter indexed (2015); limit
    1..10000 (2016); without a filter it lists every contact; excludeempty."""
    ids = control.seed(contacts=[{"3": "a@x.com", "1": "A"}, {"3": "b@x.com"}, {"3": "c@x.com", "1": "C"}])["contacts"]
    assert data(api.get("/contact/query/", params={"3": "b@x.com", "return": "3"})) == {
        "errors": [], "result": [{"id": str(ids[1]), "3": "b@x.com"}]}
    page = data(api.get("/contact/query/", params={"return": "1", "limit": 2, "offset": 1}))["result"]
    assert page == [{"id": str(ids[1]), "1": None}, {"id": str(ids[2]), "1": "C"}]
    assert [r["id"] for r in data(api.get("/contact/query/", params={"return": "1", "excludeempty": "true"}))[
        "result"]] == [str(ids[0]), str(ids[2])]
    assert reply(api.get("/contact/query/", params={"3": "a@x.com"})) == (400, 2014)
    assert reply(api.get("/contact/query/", params={"1": "A", "return": "3"})) == (400, 2015)
    assert reply(api.get("/contact/query/", params={"return": "3", "limit": 0})) == (400, 2016)


# -- delete (§3.8) ---------------------------------------------------------------------------------


def test_delete_removes_contacts_and_skips_shared_keys(api, control):
    """§3.8: values as an array under the key field id; a key matching several contacts is not
    deleted; unknown values -> 2008 in errors."""
    control.seed(contacts=[{"3": "a@x.com"}, {"3": "t@x.com"}, {"3": "t@x.com"}])
    body = data(api.post("/contact/delete", {"key_id": "3", "3": ["a@x.com", "t@x.com", "no@x.com"]}))
    assert list(body) == ["errors"] and list(body["errors"]) == ["no@x.com"]
    assert emails(control) == ["t@x.com", "t@x.com"]


def test_delete_reports_the_count_when_switched_and_404_when_nothing_was_found(api, control):
    """§3.8 / §10.10: the count's field name is open (off by default); not found -> 404 2008."""
    control.seed(contacts=[{"3": "a@x.com"}])
    assert reply(api.post("/contact/delete", {"key_id": "3", "3": "nobody@x.com"})) == (404, 2008)
    control.settings(delete_reports_count=True)
    assert data(api.post("/contact/delete", {"key_id": "3", "3": ["a@x.com"]})) == {
        "deleted_contacts": 1, "errors": []}


def test_a_deleted_contact_leaves_its_lists(api, control):
    """§3.8: delete is irreversible; the contact is gone from every list too."""
    control.seed(contacts=[{"3": "a@x.com"}, {"3": "b@x.com"}],
                 lists=[{"name": "L", "members": ["a@x.com", "b@x.com"]}])
    api.post("/contact/delete", {"key_id": "3", "3": ["a@x.com"]})
    assert control.get("/lists")[0]["emails"] == ["b@x.com"]
