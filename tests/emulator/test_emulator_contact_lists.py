"""Contact lists (emarsys-api.md §5): create, list, add/delete/replace members, count, rename,
deletelist, and paging through members with contactIds."""

from __future__ import annotations

import re

from tests.emulator.conftest import data, reply

EMAILS = ["a@example.com", "b@example.com", "c@example.com"]


def seed_contacts(control, emails=EMAILS) -> list[int]:
    return control.seed(contacts=[{"3": e} for e in emails])["contacts"]


def create_list(api, name="Audience", **body) -> int:
    list_id = data(api.post("/contactlist", {"name": name, **body}))["id"]
    assert isinstance(list_id, int)
    return list_id


def test_create_returns_an_integer_id_and_list_all_shows_it_as_a_string(api):
    """§5.1 create -> data.id; §5.2 list all: id as a string, name, created, type 0."""
    list_id = create_list(api, "VIP customers", description="top spenders")
    lists = data(api.get("/contactlist"))
    assert [{"id": str(list_id), "name": "VIP customers", "type": 0}] == [
        {k: v for k, v in item.items() if k != "created"} for item in lists]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", lists[0]["created"])


def test_create_without_external_ids_has_no_errors_key(api):
    """§3.4: contact-list create: `errors` absent when no external_ids were sent."""
    assert set(data(api.post("/contactlist", {"name": "Empty"}))) == {"id"}


def test_create_with_clean_external_ids_answers_errors_as_empty_array(api, control):
    """§3.4: `errors` is `[]` when external_ids were sent and none failed."""
    seed_contacts(control)
    body = data(api.post("/contactlist", {"name": "Full", "key_id": "3", "external_ids": EMAILS}))
    assert body["errors"] == []
    assert control.get("/lists")[0]["emails"] == EMAILS


def test_a_duplicate_name_is_3005_case_insensitively(api):
    """§5.1: names are unique (3005); §10.9: uniqueness is case-insensitive and trimmed."""
    create_list(api, "Newsletter")
    for name in ("Newsletter", "NEWSLETTER", "  newsletter "):
        assert reply(api.post("/contactlist", {"name": name})) == (400, 3005)


def test_a_missing_name_is_3001(api):
    """§2.3: 3001 List name is not set."""
    assert reply(api.post("/contactlist", {"key_id": "3"})) == (400, 3001)
    assert reply(api.post("/contactlist", {"name": "  "})) == (400, 3001)


def test_invalid_characters_in_a_name_are_3004_unless_strict_names_are_off(api, control):
    """§5.1 / §10.9: invalid characters give 3004; the character set is open, so it is a switch."""
    assert reply(api.post("/contactlist", {"name": "a <b>"})) == (400, 3004)
    control.settings(strict_list_names=False)
    create_list(api, "a <b>")


def test_create_reports_unknown_contacts_as_2008_and_never_creates_them(api, control):
    """§5.1: contacts that do not exist are reported in errors (2008) and are not created."""
    seed_contacts(control, ["thor@example.com"])
    body = data(api.post("/contactlist", {"name": "asgard", "key_id": "3",
                                          "external_ids": ["thor@example.com", "loki@example.com"]}))
    assert body["errors"] == {"loki@example.com": {
        "2008": "No contact found with the external id: 3 - loki@example.com"}}
    assert [c["3"] for c in control.get("/contacts")] == ["thor@example.com"]
    assert control.get("/lists")[0]["emails"] == ["thor@example.com"]


def test_more_than_10000_external_ids_is_3002_and_not_an_array_is_3003(api, control):
    """§5.1 / §5.3: over 10,000 ids gives 3002; §2.3: a non-array gives 3003."""
    list_id = create_list(api)
    too_many = [f"u{i}@example.com" for i in range(10_001)]
    assert reply(api.post("/contactlist", {"name": "Big", "external_ids": too_many})) == (400, 3002)
    assert reply(api.post(f"/contactlist/{list_id}/add", {"key_id": "3", "external_ids": too_many})) \
        == (400, 3002)
    assert reply(api.post(f"/contactlist/{list_id}/add", {"key_id": "3", "external_ids": "a"})) == (400, 3003)


def test_add_inserts_existing_contacts_and_reports_unknown_ones_as_2008(api, control):
    """§5.3: add -> inserted_contacts and errors keyed by key value; add never creates contacts."""
    seed_contacts(control)
    list_id = create_list(api)
    body = data(api.post(f"/contactlist/{list_id}/add",
                         {"key_id": "3", "external_ids": ["a@example.com", "ghost@example.com", "b@example.com"]}))
    assert body == {"inserted_contacts": 2, "errors": {
        "ghost@example.com": {"2008": "No contact found with the external id: 3 - ghost@example.com"}}}
    assert len(control.get("/contacts")) == 3
    assert control.get("/lists")[0]["emails"] == ["a@example.com", "b@example.com"]


def test_a_clean_add_answers_errors_as_empty_array(api, control):
    """§5.3: `errors` is `[]` when clean."""
    seed_contacts(control)
    list_id = create_list(api)
    assert data(api.post(f"/contactlist/{list_id}/add", {"key_id": "3", "external_ids": EMAILS})) == {
        "inserted_contacts": 3, "errors": []}


def test_adding_a_member_again_is_not_counted_unless_switched(api, control):
    """§10.9: re-adding a member is a no-op; whether it counts in inserted_contacts is a switch
    (default: not counted)."""
    seed_contacts(control)
    list_id = create_list(api)
    api.post(f"/contactlist/{list_id}/add", {"key_id": "3", "external_ids": EMAILS[:2]})
    again = {"key_id": "3", "external_ids": EMAILS}
    assert data(api.post(f"/contactlist/{list_id}/add", again))["inserted_contacts"] == 1
    control.settings(count_existing_members=True)
    assert data(api.post(f"/contactlist/{list_id}/add", again))["inserted_contacts"] == 3
    assert len(control.get("/lists")[0]["contact_ids"]) == 3


def test_members_can_be_named_by_internal_id(api, control):
    """§5.3: key_id may be the internal `id`."""
    ids = seed_contacts(control)
    list_id = create_list(api)
    body = data(api.post(f"/contactlist/{list_id}/add", {"key_id": "id", "external_ids": [ids[0], str(ids[1])]}))
    assert body["inserted_contacts"] == 2
    assert control.get("/lists")[0]["contact_ids"] == ids[:2]


def test_a_shared_email_is_2010_on_add(api, control):
    """§3.1 / §7.3: a key matching several contacts fails per key with 2010."""
    seed_contacts(control, ["twin@example.com", "twin@example.com"])
    list_id = create_list(api)
    body = data(api.post(f"/contactlist/{list_id}/add", {"key_id": "3", "external_ids": ["twin@example.com"]}))
    assert body["inserted_contacts"] == 0
    assert list(body["errors"]["twin@example.com"]) == ["2010"]


def test_add_or_delete_on_an_unknown_list_is_3004_and_a_non_numeric_id_is_rejected(api):
    """§9: unknown list -> 400 3004 on add/delete; §5.3: a non-numeric id -> 400 replyCode 1."""
    body = {"key_id": "3", "external_ids": ["a@example.com"]}
    assert reply(api.post("/contactlist/999/add", body)) == (400, 3004)
    assert reply(api.post("/contactlist/999/delete", body)) == (400, 3004)
    response = api.post("/contactlist/Wrong-id/add", body)
    assert reply(response) == (400, 1)
    assert response.json()["replyText"] == "Action Wrong-id is invalid."


def test_delete_removes_membership_only(api, control):
    """§5.4: delete -> deleted_contacts and errors; the contacts themselves stay."""
    seed_contacts(control)
    list_id = create_list(api, external_ids=EMAILS, key_id="3")
    body = data(api.post(f"/contactlist/{list_id}/delete",
                         {"key_id": "3", "external_ids": ["a@example.com", "nobody@example.com"]}))
    assert body["deleted_contacts"] == 1
    assert list(body["errors"]) == ["nobody@example.com"]
    assert control.get("/lists")[0]["emails"] == ["b@example.com", "c@example.com"]
    assert len(control.get("/contacts")) == 3


def test_replace_makes_the_list_exactly_the_given_contacts(api, control):
    """§5.5: replace -> the list becomes exactly these contacts."""
    seed_contacts(control)
    list_id = create_list(api, external_ids=EMAILS[:2], key_id="3")
    body = data(api.post(f"/contactlist/{list_id}/replace", {"key_id": "3", "external_ids": ["c@example.com"]}))
    assert body == {"inserted_contacts": 1, "errors": []}
    assert control.get("/lists")[0]["emails"] == ["c@example.com"]


def test_count_answers_an_integer_and_404_3006_for_an_unknown_list(api, control):
    """§5.5: count -> data integer; unknown list -> 404 3006."""
    seed_contacts(control)
    list_id = create_list(api, external_ids=EMAILS, key_id="3")
    assert data(api.get(f"/contactlist/{list_id}/count")) == 3
    assert reply(api.get("/contactlist/12345/count")) == (404, 3006)


def test_rename_answers_id_and_name_and_refuses_a_taken_name(api):
    """§5.5: rename -> {id, name}; 404 for an unknown list; a taken name is 3005."""
    first = create_list(api, "First")
    create_list(api, "Second")
    assert data(api.post(f"/contactlist/{first}/rename", {"name": "Renamed"})) == {"id": first, "name": "Renamed"}
    assert reply(api.post(f"/contactlist/{first}/rename", {"name": "second"})) == (400, 3005)
    assert reply(api.post("/contactlist/4242/rename", {"name": "X"})) == (404, 3006)
    assert data(api.post(f"/contactlist/{first}/rename", {"name": "RENAMED"}))["name"] == "RENAMED"


def test_deletelist_deletes_on_post_only_and_leaves_contacts(api, control):
    """§5.5: deletelist is POST only (other methods 400 1009), answers {}, contacts unaffected;
    unknown list 404 3006."""
    seed_contacts(control)
    list_id = create_list(api, external_ids=EMAILS, key_id="3")
    for method in ("GET", "DELETE", "PUT"):
        assert reply(api.request(method, f"/contactlist/{list_id}/deletelist")) == (400, 1009)
    assert data(api.post(f"/contactlist/{list_id}/deletelist")) == {}
    assert control.get("/lists") == []
    assert len(control.get("/contacts")) == 3
    assert reply(api.post(f"/contactlist/{list_id}/deletelist")) == (404, 3006)


def test_a_list_in_a_combined_segment_cannot_be_deleted(api, control):
    """§5.5: a list used in a combined segment: 400 3008."""
    list_id = control.seed(lists=[{"name": "Segmented", "in_combined_segment": True}])["lists"][0]["id"]
    assert reply(api.post(f"/contactlist/{list_id}/deletelist")) == (400, 3008)


def test_contact_ids_pages_with_top_skiptoken_and_a_relative_next(v2, control):
    """§5.6: contactIds in the envelope, `value` integers, `next` relative to the version root
    (no /api/v2) carrying $skiptoken and $top, null on the last page."""
    emails = [f"m{i}@example.com" for i in range(7)]
    ids = seed_contacts(control, emails)
    list_id = create_list(v2, external_ids=emails, key_id="3")
    page = data(v2.get(f"/contactlist/{list_id}/contactIds", params={"$top": 3}))
    assert page == {"value": ids[:3], "next": f"/contactlist/{list_id}/contactIds?$skiptoken=3&$top=3"}
    seen = list(page["value"])
    while page["next"]:
        page = data(v2.get(page["next"]))
        seen += page["value"]
    assert seen == ids
    assert data(v2.get(f"/contactlist/{list_id}/contactIds")) == {"value": ids, "next": None}


def test_contact_ids_validates_top_and_unknown_lists(v2):
    """§5.6: $top 1..100,000; unknown list 404."""
    list_id = create_list(v2)
    assert v2.get(f"/contactlist/{list_id}/contactIds", params={"$top": 100_001}).status_code == 400
    assert v2.get(f"/contactlist/{list_id}/contactIds", params={"$top": 0}).status_code == 400
    assert data(v2.get(f"/contactlist/{list_id}/contactIds", params={"$top": 100_000})) == {"value": [], "next": None}
    assert reply(v2.get("/contactlist/31337/contactIds")) == (404, 3006)


def test_contact_ids_is_absent_from_v3_unless_switched_on(v3, control):
    """§1.1 / §10.2: whether /api/v3/.../contactIds exists is open: by default v3 answers 404."""
    list_id = create_list(v3)
    assert v3.get(f"/contactlist/{list_id}/contactIds").status_code == 404
    control.settings(v3_contact_ids=True)
    assert data(v3.get(f"/contactlist/{list_id}/contactIds")) == {"value": [], "next": None}


def test_membership_of_one_contact(api, control):
    """§5.5: GET /contactlist/{id}/contacts/{contactId} -> true/false."""
    ids = seed_contacts(control)
    list_id = create_list(api, external_ids=EMAILS[:1], key_id="3")
    assert data(api.get(f"/contactlist/{list_id}/contacts/{ids[0]}")) is True
    assert data(api.get(f"/contactlist/{list_id}/contacts/{ids[1]}")) is False


def test_a_new_list_is_invisible_to_reads_during_the_read_after_write_lag(api, control):
    """§7.12: eventual consistency: with read_after_write_lag a new list is missing from list-all."""
    control.settings(read_after_write_lag=30)
    create_list(api, "Fresh")
    assert data(api.get("/contactlist")) == []
    assert [item["name"] for item in control.get("/lists")] == ["Fresh"]
    control.settings(read_after_write_lag=0)
