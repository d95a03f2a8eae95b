"""Value coercion: one row per (Python type a dbt adapter returns, Emarsys field kind), the rules
around them, and properties that hold for any value (hypothesis)."""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbt_emarsys_sync.emarsys import CoercionError, CoercionOptions, EmarsysField, coerce

KINDS = ["shorttext", "longtext", "largetext", "url", "date", "birthdate", "numeric", "singlechoice",
         "multichoice", "optin"]
LOYALTY = {"Bronze": 1, "Silver": 2, "Gold": 3}
CATEGORIES = {"Shoes": 1, "Bags": 2, "Outdoor": 3}


def field_of(kind: str) -> EmarsysField:
    if kind == "optin":
        return EmarsysField(31, "Opt-In", "special", "optin")
    choices = LOYALTY if kind == "singlechoice" else CATEGORIES if kind == "multichoice" else {}
    return EmarsysField(5000 + KINDS.index(kind), f"My {kind}", kind, f"my_{kind}", dict(choices))


R = CoercionError          # the row is rejected, with a reason
TEXT = ["shorttext", "longtext", "largetext", "url"]
NOT_TEXT = ["date", "birthdate", "numeric", "singlechoice", "multichoice", "optin"]
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
BIG = 2 ** 70                                  # beyond int64: NUMERIC(38) columns, Python ints
DEC = Decimal("1234567890.123456789012")
NAIVE = datetime(2024, 3, 1, 23, 30)
AWARE = datetime(2024, 3, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))   # 2024-03-01 23:30 UTC


def row(type_name, value, expected: dict, **values_per_kind):
    return [(type_name, kind, values_per_kind.get(kind, value), expected[kind]) for kind in KINDS]


def same(value, kinds):
    return {k: value for k in kinds}


# One row per (Python type, field kind). Where one value can't show a kind's rule, the row uses a
# value of the same type that can (values_per_kind).
TABLE = [
    *row("str", "Ada", {**same("Ada", TEXT), "url": "https://shop.example/a", "date": "2024-02-29",
                        "birthdate": "1990-05-17", "numeric": "12.50", "singlechoice": 3,
                        "multichoice": [1, 2], "optin": 1},
         url="https://shop.example/a", date="2024-02-29", birthdate="1990-05-17T23:30:00Z",
         numeric=" 12.50 ", singlechoice="gold", multichoice="Shoes, bags", optin="Yes"),
    *row("int", 42, {**same("42", TEXT), "date": R, "birthdate": R, "numeric": "42", "singlechoice": 2,
                     "multichoice": [3], "optin": 1},
         singlechoice=2, multichoice=3, optin=1),
    *row("big int", BIG, {**same(str(BIG), TEXT), "date": R, "birthdate": R, "numeric": str(BIG),
                          "singlechoice": R, "multichoice": R, "optin": R}),
    *row("Decimal", DEC, {**same(str(DEC), TEXT), "date": R, "birthdate": R, "numeric": str(DEC),
                          "singlechoice": 3, "multichoice": [1], "optin": 2},
         singlechoice=Decimal("3"), multichoice=Decimal("1.0"), optin=Decimal("0")),
    *row("float", 19.99, {**same("19.99", TEXT), "date": R, "birthdate": R, "numeric": "19.99",
                          "singlechoice": 1, "multichoice": R, "optin": 1},
         singlechoice=1.0, optin=1.0),
    *row("float NaN", math.nan, same(R, KINDS)),
    *row("float Inf", -math.inf, same(R, KINDS)),
    *row("bool", True, {**same("true", TEXT), "date": R, "birthdate": R, "numeric": R, "singlechoice": R,
                        "multichoice": R, "optin": 2},
         optin=False),
    *row("date", date(2024, 2, 29), {**same("2024-02-29", TEXT), "date": "2024-02-29",
                                     "birthdate": "2024-02-29", **same(R, NOT_TEXT[2:])}),
    *row("datetime naive", NAIVE, {**same("2024-03-01T23:30:00", TEXT), "date": "2024-03-01",
                                   "birthdate": "2024-03-01", **same(R, NOT_TEXT[2:])}),
    *row("datetime aware", AWARE, {**same("2024-03-02T01:30:00+02:00", TEXT), "date": "2024-03-01",
                                   "birthdate": "2024-03-01", **same(R, NOT_TEXT[2:])}),
    *row("time", time(9, 30), {**same("09:30:00", TEXT), **same(R, NOT_TEXT)}),
    *row("UUID", UID, {**same(str(UID), TEXT), **same(R, NOT_TEXT)}),
    *row("bytes", b"Silver", {**same("Silver", TEXT), "date": R, "birthdate": R, "numeric": R,
                              "singlechoice": 2, "multichoice": [2], "optin": R},
         multichoice=b"Bags"),
    *row("list", ["Shoes", "Outdoor"], {**same('["Shoes","Outdoor"]', TEXT), "date": R, "birthdate": R,
                                        "numeric": R, "singlechoice": R, "multichoice": [1, 3], "optin": R}),
    *row("dict (JSON)", {"tier": "Gold", "n": 2}, {**same('{"tier":"Gold","n":2}', TEXT),
                                                   **same(R, NOT_TEXT)}),
]


def test_the_table_has_one_row_per_python_type_and_field_kind():
    pairs = {(t, k) for t, k, _, _ in TABLE}
    assert len(pairs) == len(TABLE) == 16 * len(KINDS)


@pytest.mark.parametrize("type_name,kind,value,expected", TABLE,
                         ids=[f"{t}->{k}" for t, k, _, _ in TABLE])
def test_coercion_table(type_name, kind, value, expected):
    f = field_of(kind)
    if expected is R:
        with pytest.raises(CoercionError) as err:
            coerce(value, f)
        assert str(err.value)
    else:
        assert coerce(value, f) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_none_stays_none_for_the_null_policy(kind):
    assert coerce(None, field_of(kind)) is None


@pytest.mark.parametrize("kind", NOT_TEXT)
def test_blank_strings_are_null_outside_text(kind):
    assert coerce("  ", field_of(kind)) is None


def test_blank_strings_stay_text_in_text_fields():
    assert coerce("", field_of("shorttext")) == ""


def test_over_length_text_is_rejected_or_cut_when_the_sync_says_so():
    long = "x" * 61
    with pytest.raises(CoercionError, match="61 characters, over the field's limit of 60"):
        coerce(long, field_of("shorttext"))
    assert coerce(long, field_of("shorttext"), CoercionOptions(truncate_text=True)) == "x" * 60
    assert coerce("y" * 256, field_of("longtext"), CoercionOptions(truncate_text=True)) == "y" * 255
    assert coerce("z" * 100_000, field_of("largetext")) == "z" * 100_000


def test_timestamps_become_dates_in_the_syncs_zone_naive_ones_read_as_utc():
    berlin = CoercionOptions(timezone="Europe/Berlin")
    assert coerce(NAIVE, field_of("date"), berlin) == "2024-03-02"
    assert coerce(AWARE, field_of("date"), berlin) == "2024-03-02"
    assert coerce("2024-03-01 23:30:00", field_of("date"), berlin) == "2024-03-02"
    assert coerce(datetime(2024, 3, 1, 23, 30, tzinfo=timezone.utc), field_of("date")) == "2024-03-01"
    with pytest.raises(CoercionError, match="not a valid date"):
        coerce("2023-02-29", field_of("date"))
    with pytest.raises(CoercionError, match="YYYY-MM-DD"):
        coerce("01/03/2024", field_of("date"))


def test_numbers_keep_every_digit_and_respect_emarsys_limits():
    numeric = field_of("numeric")
    assert coerce(Decimal("0.10"), numeric) == "0.10"
    assert coerce(Decimal("-12345678901234567890.000000000000000001"), numeric) == \
        "-12345678901234567890.000000000000000001"
    assert coerce(10 ** 23, numeric) == "1" + "0" * 23
    assert coerce("1e3", numeric) == "1000"
    assert coerce(0.1 + 0.2, numeric) == "0.30000000000000004"     # the float as stored, not re-rounded
    for too_big in (10 ** 24, Decimal("1E+24"), 1e24, "1" * 25):
        with pytest.raises(CoercionError, match="24 digits"):
            coerce(too_big, numeric)
    for not_a_number in ("12,5", "NaN", "Infinity", "1_000", "0x10", "1.2.3"):
        with pytest.raises(CoercionError):
            coerce(not_a_number, numeric)


def test_choice_labels_exact_then_case_insensitive_unknown_rejected_with_the_choices():
    single = field_of("singlechoice")
    assert coerce("Gold", single) == 3 and coerce(" silver ", single) == 2 and coerce("3", single) == 3
    with pytest.raises(CoercionError) as err:
        coerce("Diamond", single)
    assert "'Diamond' is not a choice of 'My singlechoice' (id 5007, singlechoice)" in str(err.value)
    assert "'Gold'" in str(err.value)
    clash = EmarsysField(7, "Tier", "singlechoice", None, {"Gold": 1, "GOLD": 2})
    assert coerce("GOLD", clash) == 2
    with pytest.raises(CoercionError, match="several choices"):
        coerce("gold", clash)
    numbered = EmarsysField(8, "Children", "singlechoice", None, {"1": 11, "2": 12, "3": 13})
    assert coerce(3, numbered) == 13 and coerce(12, numbered) == 12   # a label, then an id
    clash = EmarsysField(8, "Children", "singlechoice", None, {"1": 2, "2": 5})
    with pytest.raises(CoercionError, match="both the id"):
        coerce(2, clash)                                     # the id of "1" and the label of id 5


def test_multichoice_lists_and_their_edges():
    multi = field_of("multichoice")
    assert coerce(("Bags", "Shoes", "Bags"), multi) == [2, 1]
    assert coerce('["Outdoor", 2]', multi) == [3, 2]
    assert coerce({"Shoes"}, multi) == [1]
    assert coerce([], multi) is None                          # Emarsys refuses []: it's a null
    with pytest.raises(CoercionError):
        coerce(["Shoes", "Hats"], multi)
    with pytest.raises(CoercionError):
        coerce([["Shoes"]], multi)
    comma = EmarsysField(9, "Sizes", "multichoice", None, {"S, M": 1, "L": 2})
    assert coerce("S, M", comma) == [1]


def test_opt_in_takes_only_clear_values():
    optin = field_of("optin")
    assert [coerce(v, optin) for v in (True, False, 1, 2, 0, "true", "N", "1", "2")] == [1, 2, 1, 2, 2, 1, 2, 1, 2]
    for unclear in ("maybe", 3, -1, 1.5, date(2024, 1, 1)):
        with pytest.raises(CoercionError):
            coerce(unclear, optin)


def test_binary_that_is_not_text_and_read_only_fields_are_rejected():
    with pytest.raises(CoercionError, match="not UTF-8"):
        coerce(b"\xff\xfe", field_of("shorttext"))
    with pytest.raises(CoercionError, match="cannot be written"):
        coerce("x", EmarsysField(32, "User status", "special", "status"))
    with pytest.raises(CoercionError, match="timedelta"):
        coerce(timedelta(days=1), field_of("shorttext"))


# -- properties ------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.text(), st.integers(), st.integers(min_value=2 ** 63, max_value=2 ** 200),
    st.decimals(), st.floats(), st.booleans(), st.dates(), st.datetimes(),
    st.datetimes(timezones=st.timezones()), st.times(), st.uuids(), st.binary(),
)
adapter_values = st.one_of(scalars, st.lists(scalars, max_size=4),
                           st.dictionaries(st.text(max_size=5), scalars, max_size=3))
options = st.builds(CoercionOptions, timezone=st.sampled_from(["UTC", "Europe/Berlin", "Pacific/Kiritimati",
                                                               "America/Adak"]),
                    truncate_text=st.booleans())


@settings(max_examples=600, deadline=None)
@given(value=adapter_values, kind=st.sampled_from(KINDS), opts=options)
def test_coercion_never_raises_anything_but_coercion_error(value, kind, opts):
    try:
        coerce(value, field_of(kind), opts)
    except CoercionError:
        pass


@settings(max_examples=400, deadline=None)
@given(d=st.decimals(allow_nan=False, allow_infinity=False, places=None),
       kind=st.sampled_from(["numeric", "largetext"]))
def test_coercion_never_changes_a_decimals_digits(d, kind):
    try:
        out = coerce(d, field_of(kind))
    except CoercionError:
        return
    assert Decimal(out) == d
    if d.as_tuple().exponent <= 0 and not d.is_zero():      # the same digits and the same scale
        assert Decimal(out).as_tuple() == d.as_tuple()


@settings(max_examples=300, deadline=None)
@given(n=st.integers(min_value=-(10 ** 24) + 1, max_value=10 ** 24 - 1))
def test_integers_of_any_size_keep_their_digits(n):
    assert coerce(n, field_of("numeric")) == str(n)
    assert coerce(n, field_of("largetext")) == str(n)


@settings(max_examples=300, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e20, max_value=1e20)
       .filter(lambda x: x == 0 or abs(x) >= 1e-40))   # tinier: over 64 decimals, rejected
def test_floats_are_written_as_the_shortest_text_that_reads_back_the_same(x):
    out = coerce(x, field_of("numeric"))
    assert float(out) == x
