"""`coercer_for` (the per-field fast path a sync's hot loop uses) gives exactly what `coerce` gives,
value or rejection reason, for any value a dbt adapter can return; `column_coercer_for` (a whole
column at once) gives what `coercer_for` gives value by value."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbt_emarsys_sync.emarsys.fields import CoercionError, CoercionOptions, coerce, coercer_for, column_coercer_for

from .test_emarsys_coercion import KINDS, adapter_values, field_of, options, scalars


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


def value_by_value(f, opts, values):
    one = coercer_for(f, opts)
    return [None if v is None else outcome(one, v) for v in values]


def column_outcomes(f, opts, values):
    wire, errors = column_coercer_for(f, opts)(values)
    assert len(wire) == len(values)
    return [("rejected", str(errors[i])) if i in errors else None if v is None else ("value", w)
            for i, (v, w) in enumerate(zip(values, wire))]


# Columns as warehouses return them: mostly one type, the plain case the column path exists for, with
# nulls and the odd value at an edge; and columns of anything at all.
plain_columns = st.one_of(
    st.lists(st.one_of(st.none(), st.text(max_size=70)), max_size=30),
    st.lists(st.one_of(st.none(), st.sampled_from(["Bronze", "Silver", "Gold", "gold", "Tin"])), max_size=30),
    st.lists(st.one_of(st.none(), st.dates()), max_size=30),
    st.lists(st.one_of(st.none(), st.datetimes()), max_size=30),
    st.lists(st.datetimes(timezones=st.timezones()), max_size=30),
    st.lists(st.one_of(st.none(), st.integers(min_value=-(10 ** 25), max_value=10 ** 25)), max_size=30),
    st.lists(st.one_of(st.none(), st.decimals(places=2, max_value=10 ** 23, min_value=-(10 ** 23))), max_size=30),
    st.lists(st.one_of(st.none(), st.decimals()), max_size=30),
    st.lists(st.one_of(st.none(), st.booleans()), max_size=30),
    # Decimals as a warehouse casts them to text, and text that only looks like them.
    st.lists(st.one_of(st.none(), st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: format(d, "f")),
                       st.from_regex(r"-?[0-9]{1,26}(\.[0-9]{0,4})?", fullmatch=True)), max_size=30),
)
any_columns = st.lists(scalars, max_size=20)


@settings(max_examples=1500, deadline=None)
@given(values=st.one_of(plain_columns, any_columns), kind=st.sampled_from(KINDS), opts=options)
def test_a_whole_column_converts_as_its_values_do_one_by_one(values, kind, opts):
    f = field_of(kind)
    assert column_outcomes(f, opts, values) == value_by_value(f, opts, values)


@pytest.mark.parametrize("kind, values", [
    ("shorttext", ["x" * 60, None, "é"]), ("shorttext", ["x" * 61, "y"]),
    ("numeric", [Decimal("12.50"), Decimal("-0"), None, Decimal("0.00")]),
    ("numeric", [Decimal("1E+30"), Decimal("1")]), ("numeric", [Decimal("NaN"), Decimal("1")]),
    ("numeric", [10 ** 24 - 1, -(10 ** 24) + 1]), ("numeric", [10 ** 24, 1]), ("numeric", [True, 1]),
    ("numeric", ["12.50", "-0.00", "0", None, "-3"]), ("numeric", ["-0", "1"]), ("numeric", ["007", "1"]),
    ("numeric", ["1.", "1"]), ("numeric", [" 1", "2"]), ("numeric", ["1" * 24, "2"]), ("numeric", ["1" * 25]),
    ("numeric", ["NaN", "1"]), ("numeric", ["١٢", "1"]),
    ("date", [date(1, 1, 1), None]), ("date", [datetime(2024, 1, 1, 23, 30), datetime(2024, 1, 2)]),
    ("singlechoice", ["Gold", "Silver", None]), ("singlechoice", ["Gold", "Diamond"]),
    ("optin", [True, False, None]), ("optin", [True, 1]), ("shorttext", []), ("numeric", [None, None]),
])
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_a_whole_column_converts_as_its_values_do_at_the_edges(kind, values, zone):
    f, opts = field_of(kind), CoercionOptions(timezone=zone)
    assert column_outcomes(f, opts, values) == value_by_value(f, opts, values)
