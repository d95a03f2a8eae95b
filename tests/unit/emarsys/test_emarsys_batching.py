"""Batching: bodies under the count and byte caps measured on the encoded body, id chunkers, and the
in-flight key guard."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbt_emarsys_sync.emarsys import ContactBatcher, InFlightKeys, chunk_list_ids, chunk_read_keys
from dbt_emarsys_sync.emarsys.batching import (MAX_BATCH_BYTES, MAX_POST_BYTES, MAX_PUT_BYTES,
                                               ContactTooLarge, DuplicateKey, max_body_bytes)


def test_chunkers_stream_in_order_under_the_caps():
    chunks = list(chunk_list_ids(f"k{i}" for i in range(25_001)))
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_001]
    assert [k for c in chunks for k in c] == [f"k{i}" for i in range(25_001)]
    assert [len(c) for c in chunk_read_keys(str(i) for i in range(2500))] == [1000, 1000, 500]
    with pytest.raises(ValueError):
        list(chunk_list_ids(["a"], size=10_001))
    assert list(chunk_list_ids([])) == []



def batches_of(contacts: list[tuple[str, bytes]], key_id="3", max_contacts=1000, max_bytes=MAX_BATCH_BYTES):
    batcher = ContactBatcher(key_id, max_contacts, max_bytes)
    out = [b for key, enc in contacts if (b := batcher.add(key, enc))]
    last = batcher.flush()
    return out + ([last] if last else [])


def contact(i: int, size: int = 0) -> tuple[str, bytes]:
    key = f"c{i}@example.com"
    return key, orjson.dumps({"3": key, "1": "x" * size})


def test_at_most_1000_contacts_per_request():
    batches = batches_of([contact(i) for i in range(2500)])
    assert [len(keys) for keys, _ in batches] == [1000, 1000, 500]
    for keys, body in batches:
        decoded = orjson.loads(body)
        assert decoded["key_id"] == "3" and [c["3"] for c in decoded["contacts"]] == keys


def test_the_byte_cap_is_measured_on_the_encoded_body():
    # 300 contacts of ~40 KB: the byte cap, not the count, closes each batch.
    contacts = [contact(i, 40_000) for i in range(300)]
    batches = batches_of(contacts)
    assert len(batches) > 1
    for keys, body in batches[:-1]:
        assert len(body) <= MAX_PUT_BYTES
        assert len(body) + 1 + len(contacts[0][1]) > MAX_PUT_BYTES      # the next one wouldn't fit
    assert sum(len(keys) for keys, _ in batches) == 300
    assert max_body_bytes("PUT") == MAX_PUT_BYTES == 8_000_000 and max_body_bytes("POST") == MAX_POST_BYTES


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=300), max_size=60),
       max_contacts=st.integers(min_value=1, max_value=7), max_bytes=st.integers(min_value=400, max_value=3000))
def test_batches_are_exact_full_and_in_order(sizes, max_contacts, max_bytes):
    contacts = [contact(i, s) for i, s in enumerate(sizes)
                if len(contact(i, s)[1]) + 30 <= max_bytes]
    batcher = ContactBatcher("3", max_contacts, max_bytes)
    batches = []
    for key, enc in contacts:
        full = batcher.add(key, enc)
        if full:
            batches.append(full)
        assert batcher.size == len(b'{"key_id":"3","contacts":[' + b",".join(batcher.parts) + b"]}")
    if (last := batcher.flush()):
        batches.append(last)
    assert [k for keys, _ in batches for k in keys] == [k for k, _ in contacts]
    for n, (keys, body) in enumerate(batches):
        assert len(body) <= max_bytes and len(keys) <= max_contacts
        assert len(orjson.loads(body)["contacts"]) == len(keys)
        if n + 1 < len(batches) and len(keys) < max_contacts:   # closed by bytes: the next didn't fit
            first_next = contacts[sum(len(k) for k, _ in batches[:n + 1])][1]
            assert len(body) + 1 + len(first_next) > max_bytes


def test_a_key_twice_in_a_batch_and_a_contact_over_the_cap_are_refused():
    batcher = ContactBatcher("3", 1000, 1000)
    batcher.add(*contact(1))
    with pytest.raises(DuplicateKey):
        batcher.add(*contact(1))
    with pytest.raises(ContactTooLarge):
        batcher.add(*contact(2, 2000))
    keys, _ = batcher.flush()
    assert keys == ["c1@example.com"]
    batcher.add(*contact(1))          # a new batch may carry the key again


def test_in_flight_keys_never_overlap_and_never_deadlock():
    guard = InFlightKeys()
    active: dict[str, int] = {}
    overlaps: list[str] = []
    lock = threading.Lock()

    def send(keys: list[str]) -> None:
        with guard.hold("3", keys):
            with lock:
                for k in keys:
                    active[k] = active.get(k, 0) + 1
                    if active[k] > 1:
                        overlaps.append(k)
            time.sleep(0.002)
            with lock:
                for k in keys:
                    active[k] -= 1

    # Overlapping batches from 8 threads: a, b, c share keys pairwise.
    batches = [[f"k{(i + j) % 12}" for j in range(4)] for i in range(40)]
    threads = [threading.Thread(target=lambda b=b: send(b)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert overlaps == [] and guard.in_flight("3") == set() and guard.waits > 0
    with guard.hold("3", ["x"]), guard.hold("id", ["x"]):   # key fields are separate namespaces
        assert guard.in_flight("3") == {"x"}
