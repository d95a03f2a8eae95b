"""Batching: bodies under the count and byte caps measured on the encoded body, id chunkers, and the
in-flight key guard."""

from __future__ import annotations

import pytest

from dbt_emarsys_sync.emarsys import chunk_list_ids, chunk_read_keys


def test_chunkers_stream_in_order_under_the_caps():
    chunks = list(chunk_list_ids(f"k{i}" for i in range(25_001)))
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_001]
    assert [k for c in chunks for k in c] == [f"k{i}" for i in range(25_001)]
    assert [len(c) for c in chunk_read_keys(str(i) for i in range(2500))] == [1000, 1000, 500]
    with pytest.raises(ValueError):
        list(chunk_list_ids(["a"], size=10_001))
    assert list(chunk_list_ids([])) == []
