"""Contact lists and contact reads against the emulator: create, find, add, remove, count, page
through members, getdata, checkids."""

from __future__ import annotations

import pytest

from dbt_emarsys_sync.emarsys import (ContactList, ContactListExists, ContactListNotFound, EndpointUnavailable,
                                      encode_contacts)
from dbt_emarsys_sync.emarsys.batching import MAX_LIST_IDS

EMAIL = 3


def seed(client, emails: list[str], first_name: str = "Ada") -> None:
    body = encode_contacts(EMAIL, [{"3": e, "1": first_name} for e in emails])
    outcome = client.upsert_contacts(EMAIL, emails, body, create=True)
    assert outcome.acknowledged == emails, outcome.rejected


@pytest.fixture(params=["oauth", "wsse"])
def client(request, emu):
    if request.param == "oauth":
        emu.settings(v3_contact_ids=True)   # see test_members_on_v3_without_contact_ids_is_a_clear_error
    with emu.client(request.param) as client:
        yield client


def test_create_then_list_and_find_by_name(client):
    list_id = client.create_contact_list("VIP customers")
    assert isinstance(list_id, int)
    assert ContactList(list_id, "VIP customers") in client.list_contact_lists()
    assert client.find_contact_list("  vip CUSTOMERS ") == ContactList(list_id, "VIP customers")
    assert client.find_contact_list("nobody") is None


def test_a_taken_name_is_a_clear_error(client):
    client.create_contact_list("Newsletter")
    with pytest.raises(ContactListExists) as err:
        client.create_contact_list("Newsletter")
    assert "'Newsletter'" in str(err.value) and "already exists" in str(err.value)
    assert err.value.reply_code == 3005


def test_add_and_remove_members_match_outcomes_by_key(client, emu):
    seed(client, ["a@example.com", "b@example.com", "c@example.com"])
    list_id = client.create_contact_list("Audience")

    added = client.add_to_list(list_id, EMAIL, ["a@example.com", "ghost@example.com", "b@example.com",
                                                "a@example.com"])
    assert added.acknowledged == ["a@example.com", "b@example.com"]
    assert list(added.rejected) == ["ghost@example.com"]
    assert added.rejected["ghost@example.com"][0] == 2008
    assert client.count_contact_list(list_id) == 2
    stored = next(lst for lst in emu.get("/_emulator/lists") if lst["id"] == list_id)
    assert sorted(stored["emails"]) == ["a@example.com", "b@example.com"]

    removed = client.remove_from_list(list_id, EMAIL, ["a@example.com"])
    assert removed.acknowledged == ["a@example.com"] and not removed.rejected
    assert client.count_contact_list(list_id) == 1


def test_member_calls_over_10000_keys_are_split_into_requests_emarsys_accepts(client, emu):
    emails = [f"big{i:05d}@example.com" for i in range(MAX_LIST_IDS + 500)]
    for start in range(0, len(emails), 1000):
        seed(client, emails[start:start + 1000])
    list_id = client.create_contact_list("Big audience")
    before = client.requests_sent
    added = client.add_to_list(list_id, EMAIL, emails + ["ghost@example.com"])
    assert client.requests_sent - before == 2
    assert added.acknowledged == emails and list(added.rejected) == ["ghost@example.com"]
    assert client.count_contact_list(list_id) == len(emails)
    removed = client.remove_from_list(list_id, EMAIL, emails)
    assert removed.acknowledged == emails and client.count_contact_list(list_id) == 0


def test_unknown_list_is_list_not_found(client):
    with pytest.raises(ContactListNotFound):
        client.add_to_list(987654321, EMAIL, ["a@example.com"])
    with pytest.raises(ContactListNotFound):
        client.count_contact_list(987654321)
    with pytest.raises(ContactListNotFound):
        list(client.iter_list_member_ids(987654321))


def test_member_ids_are_paged_through_the_next_link(client):
    emails = [f"m{i:02d}@example.com" for i in range(25)]
    seed(client, emails)
    list_id = client.create_contact_list("Paged")
    assert not client.add_to_list(list_id, EMAIL, emails).rejected

    pages = list(client.iter_list_member_ids(list_id, page_size=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    ids = [i for page in pages for i in page]
    assert all(isinstance(i, int) for i in ids)
    assert sorted(ids) == sorted(int(v) for v in client.check_ids(EMAIL, emails).values())
    assert list(client.iter_list_member_ids(client.create_contact_list("Empty"))) == []


def test_members_map_back_to_keys_with_getdata_by_id(client):
    emails = ["x@example.com", "y@example.com"]
    seed(client, emails)
    list_id = client.create_contact_list("Map back")
    client.add_to_list(list_id, EMAIL, emails)
    ids = [str(i) for page in client.iter_list_member_ids(list_id) for i in page]
    rows, errors = client.get_contacts("id", ids, [EMAIL])
    assert not errors
    assert sorted(row[str(EMAIL)] for row in rows) == emails


def test_get_contacts_returns_rows_and_per_key_errors(client):
    seed(client, ["g@example.com"], first_name="Grace")
    rows, errors = client.get_contacts(EMAIL, ["g@example.com", "none@example.com"], [1, EMAIL])
    assert len(rows) == 1 and rows[0]["1"] == "Grace" and rows[0]["3"] == "g@example.com"
    assert "id" in rows[0]
    assert list(errors) == ["none@example.com"] and errors["none@example.com"][0] == 2008


def test_check_ids_maps_keys_to_internal_ids(client):
    seed(client, ["c1@example.com", "c2@example.com"])
    ids = client.check_ids(EMAIL, ["c1@example.com", "c2@example.com", "c3@example.com"])
    assert set(ids) == {"c1@example.com", "c2@example.com"}
    assert all(isinstance(v, str) and v.isdigit() for v in ids.values())


def test_reads_refuse_more_than_1000_keys(client):
    with pytest.raises(ValueError, match="1000"):
        client.get_contacts(EMAIL, [f"{i}@x.com" for i in range(1001)], [1])
    with pytest.raises(ValueError, match="1000"):
        client.check_ids(EMAIL, [f"{i}@x.com" for i in range(1001)])



def test_members_on_v3_without_contact_ids_is_a_clear_error(emu):
    # Emarsys documents contactIds on API v2 only (emarsys-api.md §1.1 [?]); the emulator's default.
    emu.settings(v3_contact_ids=False)
    with emu.client("oauth") as client:
        list_id = client.create_contact_list("v3 members")
        with pytest.raises(EndpointUnavailable, match="contactIds"):
            list(client.iter_list_member_ids(list_id))


def test_a_batch_in_which_every_row_failed_rejects_each_key(emu):
    # The emulator answers such a batch with HTTP 400 carrying the per-key errors (its default).
    with emu.client("oauth") as client:
        keys = ["nobody1@example.com", "nobody2@example.com"]
        outcome = client.upsert_contacts(EMAIL, keys, encode_contacts(EMAIL, [{"3": k} for k in keys]),
                                         create=False)
    assert outcome.acknowledged == []
    assert {k: code for k, (code, _) in outcome.rejected.items()} == {k: 2008 for k in keys}
