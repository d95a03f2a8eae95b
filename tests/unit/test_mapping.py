"""Row -> payload for one sync, against a field catalogue like the emulator's."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dbt_emarsys_sync.emarsys.fields import FieldCatalog
from dbt_emarsys_sync.emulator.store import Store
from dbt_emarsys_sync.mapping import MappingError, Rejection, RowMapper
from dbt_emarsys_sync.spec import SyncSpec

COLUMNS = ["EMAIL", "first_name", "birth_date", "optin", "ltv", "tier", "signed_up_at"]


@pytest.fixture
def catalog() -> FieldCatalog:
    store = Store()
    rows = [f.as_api() for f in store.fields.values()]
    choices = {fid: [{"id": str(c.id), "choice": c.label} for c in f.choices]
               for fid, f in store.fields.items()}
    return FieldCatalog.from_api(rows, choice_loader=lambda fid: choices[fid])


def spec(**overrides) -> SyncSpec:
    base = dict(name="s", key={"column": "email", "field": "email"},
                fields={"first_name": "First Name", "birth_date": "birth_date", "optin": 31,
                        "ltv": "lifetime_value", "tier": "loyalty tier", "signed_up_at": "signup_date"})
    base.update(overrides)
    return SyncSpec.model_validate(base)


def row(**values):
    base = dict(EMAIL="  Anna@Example.COM ", first_name="Anna", birth_date=date(1990, 5, 1), optin=True,
                ltv=Decimal("12345678901234567890.10"), tier="gold",
                signed_up_at=datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))))
    base.update(values)
    return tuple(base[c] for c in COLUMNS)


def test_maps_columns_to_field_ids_with_coerced_values(catalog):
    mapper = RowMapper(spec(), catalog, COLUMNS)
    r = row()
    key = mapper.key_of(r)
    assert key == "anna@example.com"   # trimmed and lower-cased
    payload = mapper.payload(key, r)
    assert payload == {"3": "anna@example.com", "1": "Anna", "4": "1990-05-01", "31": 1,
                       "5001": "12345678901234567890.10", "5003": 3,
                       "5004": "2023-12-31"}   # 00:30 at +02:00 is still Dec 31 in UTC


def test_null_policy_skip_omits_and_clear_sends_null(catalog):
    r = row(first_name=None)
    assert "1" not in RowMapper(spec(), catalog, COLUMNS).payload("a@b.co", r)
    assert RowMapper(spec(null_policy="clear"), catalog, COLUMNS).payload("a@b.co", r)["1"] is None


@pytest.mark.parametrize("email, reason", [
    (None, "is null"), ("   ", "is empty"), ("not-an-email", "not a valid email"),
])
def test_bad_keys_are_rejected_rows(catalog, email, reason):
    result = RowMapper(spec(), catalog, COLUMNS).key_of(row(EMAIL=email))
    assert isinstance(result, Rejection) and reason in result.reason and result.code == "invalid_key"


@pytest.mark.parametrize("key, valid", [
    ("100000003", True), ("1", True),
    ("0100000003", False), ("0", False), ("abc", False), ("-5", False), ("100000003.0", False),
    ("\uff11\uff10\uff10", False),   # full-width digits: str.isdigit() says yes
    ("\u00b2", False),                # superscript two
])
def test_an_emarsys_contact_id_key_is_ascii_digits_without_a_leading_zero(catalog, key, valid):
    mapper = RowMapper(spec(behaviour="update_only", key={"column": "email", "field": "id"}), catalog, COLUMNS)
    problem = mapper.check_key(key)
    if valid:
        assert problem is None
    else:
        assert problem is not None and problem.code == "invalid_key"
        assert problem.reason == f"{key!r} is not an Emarsys contact id (digits 0-9, no leading zero)"


def test_a_value_that_cannot_be_coerced_rejects_the_row_naming_column_type_and_field(catalog):
    result = RowMapper(spec(), catalog, COLUMNS).payload("a@b.co", row(tier="Diamond"))
    assert isinstance(result, Rejection)
    assert "column 'tier' (str)" in result.reason and "Loyalty Tier" in result.reason


def test_declaration_problems_stop_before_mapping(catalog):
    with pytest.raises(MappingError) as info:
        RowMapper(spec(fields={"no_such_column": "first_name", "first_name": "frist_name"}), catalog, COLUMNS)
    text = str(info.value)
    assert "column 'no_such_column' is not in the model" in text
    assert "no Emarsys field named 'frist_name'; did you mean 'first_name'" in text


def test_read_only_fields_are_refused(catalog):
    with pytest.raises(MappingError, match="read-only"):
        RowMapper(spec(fields={"first_name": 32}), catalog, COLUMNS)


def test_only_needed_columns_are_read(catalog):
    mapper = RowMapper(spec(fields={"first_name": "first_name"}), catalog, COLUMNS)
    assert mapper.read_columns == ["EMAIL", "first_name"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/Los_Angeles"])
def test_a_tz_aware_column_given_as_utc_wall_time_maps_as_the_instant_it_is(catalog, zone):
    """Plans hold tz-aware columns as naive UTC wall time: the mapper told so gives what the tz-aware
    value gives, in any sync time zone, also to a text field."""
    aware = datetime(2024, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    naive_utc = datetime(2023, 12, 31, 23, 30)
    fields = {"signed_up_at": "signup_date", "first_name": "First Name"}
    plain = RowMapper(spec(fields=fields, timezone=zone), catalog, COLUMNS)
    told = RowMapper(spec(fields=fields, timezone=zone), catalog, COLUMNS,
                     utc_columns=frozenset({"signed_up_at", "first_name"}))
    expected = plain.payload("a@b.co", row(signed_up_at=aware, first_name=aware))
    assert told.payload("a@b.co", row(signed_up_at=naive_utc, first_name=naive_utc)) == expected
    assert told.payload("a@b.co", row(signed_up_at=aware, first_name=aware)) == expected
    assert expected["5004"] == ("2024-01-01" if zone == "Europe/Berlin" else "2023-12-31")


def one_by_one(mapper, keys, rows):
    """What the engine did row by row: the key checked, then `payload`."""
    out = []
    for key, r in zip(keys, rows):
        result = Rejection(None, "the key is null", "invalid_key") if key is None else \
            mapper.check_key(key) or mapper.payload(key, r)
        out.append(result)
    return out


@pytest.mark.parametrize("null_policy", ["skip", "clear"])
@pytest.mark.parametrize("constants", [{}, {"optin": True}])
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_a_page_of_rows_maps_as_its_rows_do_one_by_one(catalog, null_policy, constants, zone):
    """`payloads` (a page, a column at a time) gives each row the payload or the rejection `payload`
    gives it, whatever mix of plain rows, nulls, bad keys and bad values the page holds."""
    fields = {"first_name": "First Name", "birth_date": "birth_date", "ltv": "lifetime_value",
              "tier": "loyalty tier", "signed_up_at": "signup_date"}
    if not constants:
        fields["optin"] = 31
    options = dict(null_policy=null_policy, timezone=zone, constants=constants, fields=fields)
    naive_utc = datetime(2023, 12, 31, 23, 30)
    pages = [
        [row(first_name=f"P{i}", signed_up_at=naive_utc) for i in range(5)],                  # plain
        [row(first_name=None, ltv=None, signed_up_at=None), row(signed_up_at=naive_utc),       # nulls,
         row(tier="Diamond", signed_up_at=naive_utc), row(ltv=Decimal("NaN"), tier="Tin"),     # bad values
         row(first_name="x" * 300, signed_up_at=naive_utc), row(optin="maybe", birth_date="1990-13-01"),
         row(ltv=Decimal("-0"), birth_date=datetime(2020, 1, 1, 23, 0))],
        [],
    ]
    keys_of = [["a@b.co", "b@b.co", "c@b.co", "d@b.co", "e@b.co"],
               ["a@b.co", "not-an-email", None, "d@b.co", "e@b.co", "f@b.co", "g@b.co"], []]
    mapper = RowMapper(spec(**options), catalog, COLUMNS, utc_columns=frozenset({"signed_up_at"}))
    for full_rows, keys, rejected in zip(pages, keys_of, [0, 5, 0]):
        rows = [tuple(r[COLUMNS.index(c)] for c in mapper.read_columns) for r in full_rows]
        payloads, problems = mapper.payloads(rows, keys)
        expected = one_by_one(mapper, keys, rows)
        assert [problems.get(i, p) for i, p in enumerate(payloads)] == expected
        assert all(payloads[i] is None for i in problems)
        assert len(problems) == rejected
        # The same through a view of rows that carry other values first (a plan's raw rows).
        shifted = mapper.at_offset(2).payloads([(0, 1, *r) for r in rows], keys)
        assert shifted == (payloads, problems)
    assert problems == {} and payloads == []
