"""The engine's range batcher: mapped plan rows -> request bodies. Its bodies are ContactBatcher's, byte
for byte (one encoding call for a whole body instead of one per contact); every row of the plan's range
is settled by exactly one batch, sent or rejected; a contact over the byte cap on its own is rejected."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dbt_emarsys_sync.emarsys import ContactBatcher
from dbt_emarsys_sync.engine import EngineOptions, _RangeBatcher


@st.composite
def plans(draw):
    """A plan range: rows with a contact of some size each, a few rejected before batching, mapped
    a few rows at a time as the engine maps them, and caps small enough to be met."""
    n = draw(st.integers(0, 60))
    sizes = draw(st.lists(st.integers(0, 300), min_size=n, max_size=n))
    rejected = draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n // 3)) if n else set()
    chunk = draw(st.integers(1, 15))
    return sizes, rejected, chunk, draw(st.integers(1, 8)), draw(st.integers(60, 1200))


@settings(max_examples=400, deadline=None)
@given(plan=plans())
def test_bodies_are_contact_batchers_and_every_row_is_settled_once(plan):
    sizes, rejected, chunk, max_contacts, max_bytes = plan
    lo = 100
    rows = [(lo + i, f"k{i}@x.io", {"3": f"k{i}@x.io", "1": "x" * size}) for i, size in enumerate(sizes)]
    hi = lo + len(rows) - 1 if rows else lo + 5     # a range may end in rows the diff left out
    batcher = _RangeBatcher("3", EngineOptions(max_batch_contacts=max_contacts, max_batch_bytes=max_bytes), lo)
    batches = []
    for at in range(0, len(rows), chunk):
        part = [r for r in rows[at:at + chunk] if r[0] - lo not in rejected]
        for seq, key, _ in rows[at:at + chunk]:
            if seq - lo in rejected:
                batcher.reject(seq, key, "mapping", "no")
        batches += batcher.extend([r[0] for r in part], [r[1] for r in part], [False] * len(part),
                                  [r[2] for r in part])
    batches += batcher.flush(hi)

    # The same rows through ContactBatcher one by one, as the engine used to build bodies.
    reference = ContactBatcher("3", max_contacts, max_bytes)
    expected, too_large = [], set()
    for seq, key, payload in rows:
        if seq - lo in rejected:
            continue
        try:
            full = reference.add(key, orjson.dumps(payload))
        except ValueError:
            too_large.add(seq)
            continue
        if full:
            expected.append(full)
    if (last := reference.flush()) is not None:
        expected.append(last)
    assert [(b.keys, b.body) for b in batches if b.keys] == expected
    assert all(len(b.body) <= max_bytes and len(b.keys) <= max_contacts for b in batches)

    # Ranges: contiguous from lo to hi; each rejection travels with the batch whose range holds it.
    covered = [r for b in batches for r in b.ranges]
    assert covered[0][0] == lo and covered[-1][1] == hi
    assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:]))
    for b in batches:
        (start, end), = b.ranges
        assert all(start <= seq <= end for seq in b.seqs)
        assert all(start <= r[0] <= end for r in b.rejections)
    rejections = {r[0]: r[2] for b in batches for r in b.rejections}
    assert rejections == {**{lo + i: "mapping" for i in rejected}, **{seq: "too_large" for seq in too_large}}
    sent = [seq for b in batches for seq in b.seqs]
    assert sent == [lo + i for i in range(len(rows)) if i not in rejected and lo + i not in too_large]


def test_a_contact_over_the_cap_alone_is_rejected_and_the_rest_still_go():
    batcher = _RangeBatcher("3", EngineOptions(max_batch_contacts=1000, max_batch_bytes=200), 1)
    payloads = [{"3": "a@x.io"}, {"3": "b@x.io", "1": "y" * 500}, {"3": "c@x.io"}]
    batches = batcher.extend([1, 2, 3], ["a@x.io", "b@x.io", "c@x.io"], [False] * 3, payloads)
    batches += batcher.flush(3)
    assert [b.keys for b in batches] == [["a@x.io", "c@x.io"]]
    assert batches[0].body == b'{"key_id":"3","contacts":[{"3":"a@x.io"},{"3":"c@x.io"}]}'
    (seq, key, code, message), = batches[0].rejections
    assert (seq, key, code) == (2, "b@x.io", "too_large") and "over the 200-byte request cap" in message
