"""The contact store's batch fast path (column-wise validation, bulk creation) must answer exactly
what the row-by-row path answers: same ids, same per-key errors, same stored contacts. Random
batches mixing valid and invalid values, nulls, empty strings, repeated keys and existing keys."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbt_emarsys_sync.emulator.settings import Settings
from dbt_emarsys_sync.emulator.store import ApiError, Store

EMAILS = [f"user{i}@example.com" for i in range(8)] + ["User0@Example.com", " user1@example.com"]
# Per field: values that are plainly valid, and values the general path must handle (errors,
# nulls, empty strings, booleans, numbers where text is expected, over-length text).
VALID = {
    "1": st.sampled_from(["Ada", "Bob", "x" * 60]),
    "4": st.sampled_from(["1990-01-31", "2000-02-29"]),
    "5003": st.sampled_from(["1", "2", "4"]),
    "31": st.sampled_from([1, 2, "1", "2"]),
    "5001": st.sampled_from(["12.5", "7", "-0.25"]),
    "5002": st.sampled_from(["C-1", "C-2", "C-3", "C-4"]),
}
OTHER = {
    "1": st.one_of(st.sampled_from(["", None, "x" * 61]), st.integers(0, 5)),
    "4": st.sampled_from(["1990-02-30", "31.01.1990", "2020-W01-1", None, ""]),
    "5003": st.one_of(st.sampled_from(["9", None, "", True]), st.integers(0, 5)),
    "31": st.sampled_from([True, 3, None, "", "true"]),
    "5001": st.sampled_from(["12,5", 7, 0.25, None]),
    "5002": st.sampled_from(["", None, 5]),
}


@st.composite
def batches(draw):
    """Mostly plain batches (the fast path's case), often with a few odd values mixed in."""
    fields = draw(st.lists(st.sampled_from(sorted(VALID)), unique=True, max_size=5))
    uniform = draw(st.booleans())
    odd = draw(st.floats(0, 0.3))
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        row = {"3": draw(st.sampled_from(EMAILS))}
        for ref in fields:
            if uniform or draw(st.booleans()):
                row[ref] = draw(OTHER[ref] if draw(st.floats(0, 1)) < odd else VALID[ref])
        rows.append(row)
    return rows


SEED = [{"3": "user0@example.com", "1": "Seeded", "5002": "C-1"},
        {"3": "user2@example.com"}, {"3": "user2@example.com"}]   # a shared email: 2010


def outcome(store: Store, rows: list[dict], create: bool, update: bool, race: bool):
    try:
        ids, errors = store.write_contacts("3", copy.deepcopy(rows), create=create, update=update, race=race)
    except ApiError as err:
        return ("error", err.status, err.reply_code)
    contacts = [{k: v for k, v in store.contact_as_api(c).items() if k != "uid"} for c in store.contacts.values()]
    index = {fid: dict(bucket) for fid, bucket in store.index.items()}
    return ids, errors, contacts, index, store.next_id


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=batches(), create=st.booleans(), update=st.booleans(), race=st.booleans(),
       case_sensitive=st.booleans(), duplicates=st.sampled_from(["reject", "last_wins", "first_wins"]))
def test_fast_and_general_paths_agree(rows, create, update, race, case_sensitive, duplicates):
    results = []
    for fast in (True, False):
        store = Store(Settings(email_case_sensitive=case_sensitive, duplicate_keys_in_batch=duplicates))
        store.fast_path = fast
        store.seed_contacts(SEED)
        results.append(outcome(store, rows, create, update, race))
    assert results[0] == results[1]


def test_the_fast_path_takes_a_plain_bulk_load():
    """The fast path really is taken for the plain case (so the test above compares two paths)."""
    store = Store()
    rows = [{"3": f"u{i}@example.com", "1": "A", "5003": "2", "31": 1} for i in range(50)]
    taken = store._write_fast(store.key("3"), rows, True, True, False, 0.0)
    assert taken is not None and len(taken[0]) == 50 and taken[1] == {}
    assert store.contacts[taken[0][0]].values == {"3": "u0@example.com", "1": "A", "5003": 2, "31": 1}
