"""Column types against Emarsys field types (checks.py), table-driven: the warehouse type names of the
adapters users run, and which Emarsys fields can take them."""

from __future__ import annotations

import pytest

from dbt_emarsys_sync.checks import column_family, type_problems
from dbt_emarsys_sync.emarsys.fields import FieldCatalog
from dbt_emarsys_sync.spec import SyncSpec


@pytest.mark.parametrize("data_type, family", [
    ("VARCHAR", "text"), ("character varying(255)", "text"), ("TEXT", "text"), ("STRING", "text"),
    ("INTEGER", "integer"), ("BIGINT", "integer"), ("HUGEINT", "integer"), ("int8", "integer"),
    ("NUMBER(38,0)", "integer"), ("DECIMAL(12,2)", "decimal"), ("numeric", "decimal"), ("NUMBER", "decimal"),
    ("DOUBLE", "float"), ("double precision", "float"), ("FLOAT64", "float"), ("real", "float"),
    ("BOOLEAN", "boolean"), ("bool", "boolean"),
    ("DATE", "date"), ("TIMESTAMP", "timestamp"), ("TIMESTAMP WITH TIME ZONE", "timestamp"),
    ("timestamp without time zone", "timestamp"), ("TIMESTAMP_NTZ", "timestamp"), ("DATETIME", "timestamp"),
    ("TIME", "time"), ("INTERVAL", "interval"), ("UUID", "uuid"), ("BLOB", "binary"), ("bytea", "binary"),
    ("VARCHAR[]", "array"), ("ARRAY", "array"), ("ARRAY<STRING>", "array"), ("_text", "array"),
    ("STRUCT(a INTEGER)", "struct"), ("MAP(VARCHAR, INTEGER)", "struct"), ("VARIANT", "struct"),
    ("JSON", "json"), ("jsonb", "json"),
    ("USER-DEFINED", None), ("GEOGRAPHY", None), (None, None), ("", None),
])
def test_column_families(data_type, family):
    assert column_family(data_type) == family


CATALOG_ROWS = [
    {"id": 1, "name": "First Name", "application_type": "shorttext", "string_id": "first_name"},
    {"id": 3, "name": "E-Mail", "application_type": "longtext", "string_id": "email"},
    {"id": 4, "name": "Date of Birth", "application_type": "birthdate", "string_id": "birth_date"},
    {"id": 31, "name": "Opt-In", "application_type": "special", "string_id": "optin"},
    {"id": 5001, "name": "Lifetime Value", "application_type": "numeric", "string_id": "lifetime_value"},
    {"id": 5003, "name": "Loyalty Tier", "application_type": "singlechoice", "string_id": "loyalty_tier"},
    {"id": 5004, "name": "Signup Date", "application_type": "date", "string_id": "signup_date"},
    {"id": 5005, "name": "Favourite Categories", "application_type": "multichoice",
     "string_id": "favourite_categories"},
]


@pytest.mark.parametrize("data_type, field, ok", [
    # dates
    ("DATE", "birth_date", True), ("TIMESTAMP", "signup_date", True), ("TIMESTAMP WITH TIME ZONE", "birth_date", True),
    ("VARCHAR", "birth_date", True),          # text is checked row by row (YYYY-MM-DD)
    ("BOOLEAN", "birth_date", False), ("INTEGER", "signup_date", False), ("DECIMAL(12,2)", "birth_date", False),
    ("TIME", "signup_date", False), ("VARCHAR[]", "birth_date", False),
    # numbers
    ("DECIMAL(12,2)", "lifetime_value", True), ("BIGINT", "lifetime_value", True), ("DOUBLE", "lifetime_value", True),
    ("BOOLEAN", "lifetime_value", False), ("DATE", "lifetime_value", False), ("TIMESTAMP", "lifetime_value", False),
    # opt-in
    ("BOOLEAN", "optin", True), ("INTEGER", "optin", True), ("VARCHAR", "optin", True), ("DATE", "optin", False),
    ("DOUBLE", "optin", False),
    # choices
    ("VARCHAR", "loyalty_tier", True), ("INTEGER", "loyalty_tier", True), ("BOOLEAN", "loyalty_tier", False),
    ("DATE", "loyalty_tier", False), ("VARCHAR[]", "favourite_categories", True), ("JSON", "favourite_categories", True),
    ("VARCHAR[]", "loyalty_tier", False),
    # text takes anything that has a text form
    ("BOOLEAN", "first_name", True), ("DATE", "first_name", True), ("DECIMAL(12,2)", "first_name", True),
    ("UUID", "first_name", True), ("INTERVAL", "first_name", False),
    # types nobody can name are not checked
    ("GEOGRAPHY", "birth_date", True),
])
def test_field_types_accept_column_types(data_type, field, ok):
    spec = SyncSpec(name="s", key={"column": "email"}, fields={"col": field})
    problems = type_problems(spec, {"email": "VARCHAR", "col": data_type}, FieldCatalog.from_api(CATALOG_ROWS))
    assert (problems == []) is ok, problems
    if not ok:
        [(path, message)] = problems
        assert path == "fields.col" and message.startswith(f"column 'col' is {data_type} (")


@pytest.mark.parametrize("data_type, ok", [("VARCHAR", True), ("BIGINT", True), ("UUID", True),
                                           ("BOOLEAN", False), ("DATE", False), ("VARCHAR[]", False)])
def test_key_columns_must_be_text_or_numbers(data_type, ok):
    spec = SyncSpec(name="s", key={"column": "k", "field": "email"})
    problems = type_problems(spec, {"k": data_type}, FieldCatalog.from_api(CATALOG_ROWS))
    assert (problems == []) is ok
    if not ok:
        assert problems[0][0] == "key.column" and "a key must be text or a number" in problems[0][1]


def test_unknown_columns_and_fields_are_left_to_the_mapping():
    spec = SyncSpec(name="s", key={"column": "email"}, fields={"missing": "birth_date", "col": "no_such_field"})
    assert type_problems(spec, {"email": "VARCHAR", "col": "BOOLEAN"}, FieldCatalog.from_api(CATALOG_ROWS)) == []


def test_column_names_match_case_insensitively_as_the_mapping_does():
    spec = SyncSpec(name="s", key={"column": "EMAIL"}, fields={"IsVip": "birth_date"})
    [(path, message)] = type_problems(spec, {"email": "VARCHAR", "isvip": "BOOLEAN"}, FieldCatalog.from_api(CATALOG_ROWS))
    assert path == "fields.IsVip" and message.startswith("column 'isvip' is BOOLEAN")
