"""A sync's report: the rejected-row examples it keeps are the same whatever order rejections arrive in
(requests settle in any order), distinct, and at most MAX_SAMPLES."""

from __future__ import annotations

import random

from dbt_emarsys_sync.report import MAX_SAMPLES, SyncReport


def rejections():
    rows = [(f"k{i:03}@x.io", "2008", "No contact found") for i in range(60)]
    rows += [(None, "invalid_key", "the key is null")] * 3 + [("k007@x.io", "2008", "No contact found")] * 4
    return rows


def samples_after(order):
    report = SyncReport("s", "m", "contact", "update_only")
    for key, code, reason in order:
        report.reject(key, code, reason)
    return report


def test_the_examples_kept_do_not_depend_on_the_order_rejections_arrive_in():
    rows = rejections()
    first = samples_after(rows)
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        again = samples_after(shuffled)
        assert again.rejected_samples == first.rejected_samples
        assert again.rejected == len(rows) and again.rejected_by_code == {"2008": 64, "invalid_key": 3}
    kept = first.rejected_samples
    assert len(kept) == MAX_SAMPLES and len({(s["key"], s["code"]) for s in kept}) == MAX_SAMPLES
    assert kept[0] == {"key": None, "code": "invalid_key", "reason": "the key is null"}
    assert [s["key"] for s in kept[1:]] == [f"k{i:03}@x.io" for i in range(MAX_SAMPLES - 1)]


def test_a_dry_runs_new_keys_are_told_apart_from_its_changed_rows():
    from dbt_emarsys_sync.report import SyncReport, new_keys_in_emarsys

    # 3 new keys (1 has a contact in Emarsys) and 2 changed rows: would_update counts 1 + 2.
    upsert = SyncReport("s", "m", "contact", "update_or_create", planned_new=3, planned_changed=2,
                        would_create=2, would_update=3)
    assert new_keys_in_emarsys(upsert) == ("of the 3 new keys, Emarsys already has 1 (their contacts would be "
                                           "updated) and 2 would be created")
    only = SyncReport("s", "m", "contact", "update_only", planned_new=1, planned_changed=1,
                      would_create=0, would_update=1)
    assert new_keys_in_emarsys(only) == ("of the 1 new key, Emarsys has a contact for 0; the other 1 has none "
                                         "and would be rejected (update_only never creates)")
