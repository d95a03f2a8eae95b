"""`coercer_for` (the per-field fast path a sync's hot loop uses) gives exactly what `coerce` gives,
value or rejection reason, for any value a dbt adapter can return."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbt_emarsys_sync.emarsys.fields import CoercionError, CoercionOptions, coerce, coercer_for

from .test_emarsys_coercion import KINDS, adapter_values, field_of, options


def outcome(fn, value):
    try:
        return ("value", fn(value))
    except CoercionError as exc:
        return ("rejected", str(exc))


@settings(max_examples=1500, deadline=None)
@given(value=adapter_values, kind=st.sampled_from(KINDS), opts=options)
def test_the_fast_path_agrees_with_coerce_on_any_value(value, kind, opts):
    f = field_of(kind)
    assert outcome(coercer_for(f, opts), value) == outcome(lambda v: coerce(v, f, opts), value)


# The values the fast paths exist for, at their edges, checked explicitly as well.
EDGES = [
    ("shorttext", "x" * 60), ("shorttext", "x" * 61), ("largetext", "y" * 5000),
    ("date", date(1, 1, 1)), ("date", datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))),
    ("date", datetime(2024, 1, 1, 0, 30)),
    ("numeric", 10 ** 24 - 1), ("numeric", 10 ** 24), ("numeric", -(10 ** 24) + 1), ("numeric", True),
    ("numeric", Decimal("0.00")), ("numeric", Decimal("-0")), ("numeric", Decimal("1E+30")),
    ("numeric", Decimal("1E-70")), ("numeric", Decimal("12.50")), ("numeric", Decimal("NaN")),
    ("singlechoice", "Gold"), ("singlechoice", "gold"), ("singlechoice", "Diamond"),
    ("optin", True), ("optin", False), ("optin", 1), ("optin", "yes"),
]


@pytest.mark.parametrize("kind, value", EDGES)
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_the_fast_path_agrees_at_the_edges(kind, value, zone):
    f, opts = field_of(kind), CoercionOptions(timezone=zone)
    assert outcome(coercer_for(f, opts), value) == outcome(lambda v: coerce(v, f, opts), value)
