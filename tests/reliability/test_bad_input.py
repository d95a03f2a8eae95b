"""Bad input corpus: malformed declarations, hostile data, a broken environment. Table-driven.

Each case is a small fixture (the declaration, the model's columns and rows, the emulator's users and
contacts, something done to the environment) and its expected outcome:

- a per-row rejection with a code and a reason (exit 1), or a one-line error naming the problem
  (exit 2 configuration, exit 3 failed while running), or success (exit 0) for edge values that are
  valid, with the exact value Emarsys must hold;
- no traceback, whatever happens;
- no partial damage: the emulator holds its contacts as before plus exactly the accepted rows' values
  (contacts nobody asked about, and rejected rows' contacts, unchanged; nothing written at all on a
  configuration error); the state acknowledges exactly the accepted keys, never a rejected one.

The run is the real CLI in-process (support.cli), from the project directory; the emulator is served
on a loopback port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.reliability.support import (DATABASE, EMAIL_FIELD, LIST_NAME, PEOPLE_COLUMNS, STATE_SCHEMA, TYPED_COLUMNS,
                                       Control, cli,
                                       emulator_env, expected_contacts, person, seed_people, snapshot_keys, sql,
                                       write_audience, write_people, write_table)

# Retries without backoff waits (stamina's test mode): an unreachable Emarsys fails in a second.
pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("fast_retries")]

OUTSIDERS = [person(i) for i in (900, 901)]    # contacts in Emarsys the model never names
WRITES = ("/contact", "/contactlist")


def contacts_sync(**overrides: Any) -> dict:
    """The fixture's update_or_create sync with `overrides` (None removes a key)."""
    spec: dict[str, Any] = {
        "name": "contacts", "object": "contact", "behaviour": "update_or_create",
        "key": {"column": "email", "field": "email"},
        "fields": {"first_name": "first_name", "last_name": "last_name", "optin": "optin",
                   "lifetime_value": "lifetime_value", "loyalty_tier": "Loyalty Tier", "birth_date": "birth_date",
                   "notes": "notes"},
    }
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def models_yaml(contacts: list | dict | None = None, audience: list | dict | None = None) -> str:
    """A _models.yml declaring the given syncs (raw meta, so malformed ones go through as written)."""
    models = []
    for name, syncs in (("contacts", contacts), ("audience", audience)):
        if syncs is None:
            continue
        meta = syncs if isinstance(syncs, dict) and "syncs" not in syncs and "name" not in syncs else \
            {"syncs": syncs if isinstance(syncs, list) else [syncs]}
        models.append({"name": name, "config": {"meta": {"emarsys": meta}}})
    return yaml.safe_dump({"version": 2, "models": models}, sort_keys=False, allow_unicode=True)


@dataclass
class Case:
    id: str
    what: str
    exit_code: int
    yaml: str | None = None                      # replaces models/_models.yml
    columns: dict[str, str] | None = None        # raw_people's column types (default PEOPLE_COLUMNS)
    rows: list[dict] | None = None               # raw_people's rows (default three valid people)
    select: str = "contacts"
    args: list[str] = field(default_factory=list)
    error: str | None = None                     # the error names this (exit 2/3)
    error_also: tuple[str, ...] = ()             # ... and these
    rejected: dict[str | None, tuple[str, str]] | None = None   # key -> (code, reason fragment)
    accepted: dict[str, dict] | None = None      # key -> field id -> the value Emarsys must hold
    standard: bool = True                        # accepted rows checked field by field (fixture mapping)
    env: dict[str, str | None] = field(default_factory=dict)   # changes to the emulator's env
    prepare: Callable | None = None              # (ctx) -> None, before the run
    check: Callable | None = None                # (ctx, outcome) -> None, extra assertions


def ok_people(n: int = 3) -> list[dict]:
    return [person(i) for i in range(1, n + 1)]


def email(i: int) -> str:
    return person(i)["email"]


def typed(what: str, case_id: str, exit_code: int, columns: dict[str, str], rows: list[dict], **kw: Any) -> Case:
    """A case of the `typed` sync: raw_typed with `columns` typed as given (the others text, null)."""
    return Case(case_id, what, exit_code, columns={**TYPED_COLUMNS, **columns}, rows=rows, select="typed",
                standard=False, **kw)


# -- malformed declarations: exit 2, nothing sent ---------------------------------------------------


META = [
    Case("meta_unknown_key", "a misspelt sync key", 2, models_yaml(contacts_sync(fileds={"first_name": "first_name"})),
         error="fileds", error_also=("fields",)),
    Case("meta_unknown_root_key", "`sync:` instead of `syncs:`", 2,
         models_yaml({"sync": [contacts_sync()]}), error="sync"),
    Case("meta_fields_wrong_type", "fields as a list", 2, models_yaml(contacts_sync(fields=["first_name"])),
         error="fields"),
    Case("meta_enabled_wrong_type", "enabled: maybe", 2, models_yaml(contacts_sync(enabled="maybe")),
         error="enabled"),
    Case("meta_unknown_behaviour", "behaviour: upsert", 2, models_yaml(contacts_sync(behaviour="upsert")),
         error="behaviour", error_also=("upsert",)),
    Case("meta_unknown_object", "object: contacts", 2, models_yaml(contacts_sync(object="contacts")),
         error="object"),
    Case("meta_missing_key", "no key block", 2, models_yaml(contacts_sync(key=None)), error="key"),
    Case("meta_missing_name", "no sync name", 2, models_yaml(contacts_sync(name=None)), error="name"),
    Case("meta_bad_name", "a sync name with a space", 2, models_yaml(contacts_sync(name="my contacts")),
         error="name"),
    Case("meta_missing_column", "a mapping from a column the model lacks", 2,
         models_yaml(contacts_sync(fields={"nickname": "first_name"})), error="nickname"),
    Case("meta_missing_key_column", "a key column the model lacks", 2,
         models_yaml(contacts_sync(key={"column": "mail", "field": "email"})), error="mail"),
    Case("meta_unknown_field", "a mapping to a field Emarsys doesn't have", 2,
         models_yaml(contacts_sync(fields={"first_name": "firstname"})), error="firstname"),
    Case("meta_read_only_field", "a mapping to a read-only field", 2,
         models_yaml(contacts_sync(fields={"first_name": 27})), error="read-only"),
    Case("meta_duplicate_sync_name", "two syncs with one name", 2,
         models_yaml(contacts_sync(name="same"),
                     {"name": "same", "object": "contact_list", "behaviour": "mirror", "list": LIST_NAME,
                      "key": {"column": "email", "field": "email"}}),
         error="same", select="contacts audience"),
    Case("meta_mirror_without_list", "a mirror with no list name", 2,
         models_yaml(audience={"name": "audience", "object": "contact_list", "behaviour": "mirror",
                               "key": {"column": "email", "field": "email"}}),
         error="list", select="audience"),
    Case("meta_bad_null_policy", "null_policy: erase", 2, models_yaml(contacts_sync(null_policy="erase")),
         error="null_policy"),
    Case("meta_removal_share_out_of_range", "safety.max_removal_share: 2", 2,
         models_yaml(contacts_sync(safety={"max_removal_share": 2})), error="max_removal_share"),
    Case("meta_bad_timezone", "a time zone that doesn't exist", 2, models_yaml(contacts_sync(timezone="Mars/Olympus")),
         error="Mars/Olympus"),
    typed("a boolean column mapped to a date field: refused before anything is sent", "meta_type_mismatch", 2,
          {"birth_date": "boolean"}, [{"email": "person.1@reliability.example.com", "birth_date": True}],
          error="birth_date"),
    Case("meta_bad_constant", "a constant that is not a choice of its field", 2,
         models_yaml(contacts_sync(constants={"loyalty_tier": "Diamond"})), error="Diamond"),
]


# -- hostile data: rejected row by row, or accepted exactly ---------------------------------------------


def _people_with_keys(*keys: str | None) -> list[dict]:
    return [person(i + 1, email=key) for i, key in enumerate(keys)]


DATA = [
    Case("data_null_key", "a null key", 1, rows=_people_with_keys(None, email(2)),
         rejected={None: ("invalid_key", "null or empty")}),
    Case("data_empty_key", "an empty key", 1, rows=_people_with_keys("", email(2)),
         rejected={None: ("invalid_key", "null or empty")}),
    Case("data_whitespace_key", "a key of spaces", 1, rows=_people_with_keys("    ", email(2)),
         rejected={None: ("invalid_key", "null or empty")}),
    Case("data_tab_key", "a key of a tab (SQL's trim takes spaces only: rejected as no address)", 1,
         rows=_people_with_keys(" \t ", email(2)), rejected={"\t": ("invalid_key", "not a valid email")}),
    Case("data_key_normalised", "a key with spaces and capitals is trimmed and lower-cased", 0,
         rows=_people_with_keys("  Person.1@Reliability.EXAMPLE.com ", email(2)),
         accepted={email(1): {EMAIL_FIELD: email(1)}, email(2): {}}),
    Case("data_invalid_emails", "keys that are no email address", 1,
         rows=_people_with_keys("not-an-email", "a@b", "x@@y.example.com", "a b@example.com", email(5)),
         rejected={"not-an-email": ("invalid_key", "not a valid email"), "a@b": ("invalid_key", "not a valid email"),
                   "x@@y.example.com": ("invalid_key", "not a valid email"),
                   "a b@example.com": ("invalid_key", "not a valid email")}),
    Case("data_duplicate_keys", "one key on two rows (after normalising): both rejected", 1,
         rows=_people_with_keys(email(1), " PERSON.1@reliability.example.com", email(3)),
         rejected={email(1): ("duplicate_key", "appears 2 times")}),
    typed("NaN and infinities in a numeric field", "data_nan_infinity", 1, {"lifetime_value": "double"},
          rows=[{"email": email(1), "first_name": "A", "lifetime_value": float("nan")},
               {"email": email(2), "first_name": "B", "lifetime_value": float("inf")},
               {"email": email(3), "first_name": "C", "lifetime_value": float("-inf")},
               {"email": email(4), "first_name": "D", "lifetime_value": 1.5}],
         rejected={email(1): ("mapping", "Emarsys can store"), email(2): ("mapping", "Emarsys can store"),
                   email(3): ("mapping", "Emarsys can store")},
         accepted={email(4): {"1": "D", "5001": "1.5"}}),
    typed("integers at and past Emarsys's 24 digits", "data_hugeint_edges", 1, {"lifetime_value": "hugeint"},
          rows=[{"email": email(1), "first_name": "A", "lifetime_value": 9223372036854775807},
               {"email": email(2), "first_name": "B", "lifetime_value": -9223372036854775808},
               {"email": email(3), "first_name": "C", "lifetime_value": 10 ** 23 + 7},
               {"email": email(4), "first_name": "D", "lifetime_value": 2 ** 127 - 1},
               {"email": email(5), "first_name": "E", "lifetime_value": 0}],
         rejected={email(4): ("mapping", "more than 24 digits")},
         accepted={email(1): {"5001": "9223372036854775807"}, email(2): {"5001": "-9223372036854775808"},
                   email(3): {"5001": str(10 ** 23 + 7)}, email(5): {"5001": "0"}}),
    typed("decimals with every digit kept, never a float in between", "data_decimal_edges", 0,
          {"lifetime_value": "decimal(38, 10)"},
          rows=[{"email": email(1), "first_name": "A", "lifetime_value": Decimal("12345678901234.0000000001")},
               {"email": email(2), "first_name": "B", "lifetime_value": Decimal("-0.0000000001")},
               {"email": email(3), "first_name": "C", "lifetime_value": Decimal("0.1")}],
         accepted={email(1): {"5001": "12345678901234.0000000001"}, email(2): {"5001": "-0.0000000001"},
                   email(3): {"5001": "0.1"}}),
    typed("doubles: tiny, huge, negative zero", "data_double_edges", 1, {"lifetime_value": "double"},
          rows=[{"email": email(1), "first_name": "A", "lifetime_value": 1e-300},
               {"email": email(2), "first_name": "B", "lifetime_value": 1.7976931348623157e308},
               {"email": email(3), "first_name": "C", "lifetime_value": -0.0},
               {"email": email(4), "first_name": "D", "lifetime_value": 0.1}],
         rejected={email(1): ("mapping", "digits"), email(2): ("mapping", "digits")},
         accepted={email(3): {"5001": "0"}, email(4): {"5001": "0.1"}}),
    typed("integers, booleans and lists into text fields", "data_other_types_to_text", 0,
          {"first_name": "integer", "last_name": "boolean", "notes": "varchar[]"},
          rows=[{"email": email(1), "first_name": 42, "last_name": True, "notes": ["a", "b"]}],
         accepted={email(1): {"1": "42", "2": "true", "5006": '["a","b"]'}}),
    typed("dates in year 1 and 9999", "data_dates_far_past_and_future", 0, {"birth_date": "date"},
          rows=[{"email": email(1), "first_name": "A", "birth_date": date(1, 1, 1)},
               {"email": email(2), "first_name": "B", "birth_date": date(9999, 12, 31)},
               {"email": email(3), "first_name": "C", "birth_date": date(2000, 2, 29)}],
         accepted={email(1): {"4": "0001-01-01"}, email(2): {"4": "9999-12-31"}, email(3): {"4": "2000-02-29"}}),
    typed("a timestamp with time zone becomes the date in the sync's zone (Europe/Berlin)",
          "data_timestamp_to_date_in_zone", 0, {"signed_up_at": "timestamptz"},
          rows=[{"email": email(1), "first_name": "A",
                "signed_up_at": datetime(2020, 12, 31, 23, 30, tzinfo=timezone.utc)}],
         accepted={email(1): {"5004": "2021-01-01"}}),
    typed("dates given as text: valid and not", "data_text_dates", 1, {},
          rows=[{"email": email(1), "first_name": "A", "birth_date": "1999-12-31"},
               {"email": email(2), "first_name": "B", "birth_date": "31/12/1999"},
               {"email": email(3), "first_name": "C", "birth_date": "2021-02-30"}],
         rejected={email(2): ("mapping", "date"), email(3): ("mapping", "date")},
         accepted={email(1): {"4": "1999-12-31"}}),
    Case("data_text_length_limits", "short text at 60 and 61 characters, large text of 100,000", 1,
         rows=[person(1, first_name="x" * 60), person(2, first_name="y" * 61), person(3, notes="z" * 100_000),
               person(4, last_name="é" * 60)],
         rejected={email(2): ("mapping", "limit of 60")},
         accepted={email(1): {"1": "x" * 60}, email(3): {"5006": "z" * 100_000}, email(4): {"2": "é" * 60}},
         standard=False),
    Case("data_text_truncated_when_declared", "truncate_text: true cuts over-long text to the limit", 0,
         select="truncated", rows=[person(1, first_name="y" * 61)], accepted={email(1): {"1": "y" * 60}},
         standard=False),
    Case("data_unusual_characters", "emoji, right-to-left text, zero-width and control characters, markup", 0,
         rows=[person(1, first_name="😀 Zoë", last_name="שָׁלוֹם"),
               person(2, first_name="a\u200bb\u00a0c", last_name="tab\there"),
               person(3, first_name="[/bold] [red]x[/red] %s {0}", last_name="quote\" back\\slash"),
               person(4, notes="line one\nline two\r\n\x00nul")],
         accepted={}),
    Case("data_unusual_keys", "keys with unicode and markup characters", 0,
         rows=_people_with_keys("ünïcödé@exämple.com", "x[/]y@example.com", "o'brien+tag@example.com"),
         accepted={"ünïcödé@exämple.com": {}, "x[/]y@example.com": {}, "o'brien+tag@example.com": {}}),
    Case("data_unknown_choice", "a label that is not a choice; another in other case", 1,
         rows=[person(1, loyalty_tier="Diamond"), person(2, loyalty_tier="gold"), person(3, loyalty_tier=" Silver ")],
         rejected={email(1): ("mapping", "not a choice")},
         accepted={email(2): {"5003": 3}, email(3): {"5003": 2}}, standard=False),
    typed("opt-in text that is neither clearly true nor false (empty text is no value: consent untouched)",
          "data_optin_ambiguous_text", 1, {},
          rows=[{"email": email(1), "first_name": "A", "optin": "maybe"},
               {"email": email(2), "first_name": "B", "optin": ""},
               {"email": email(3), "first_name": "C", "optin": "yes"},
               {"email": email(4), "first_name": "D", "optin": " FALSE "},
               {"email": email(5), "first_name": "E", "optin": "opted in"}],
         rejected={email(1): ("mapping", "neither clearly true nor clearly false"),
                   email(5): ("mapping", "neither clearly true nor clearly false")},
         accepted={email(2): {"31": None}, email(3): {"31": 1}, email(4): {"31": 2}}),
    typed("opt-in numbers: 1 in, 0 and 2 out, 3 ambiguous", "data_optin_numbers", 1, {"optin": "integer"},
          rows=[{"email": email(i), "first_name": "X", "optin": v} for i, v in ((1, 1), (2, 0), (3, 2), (4, 3))],
         rejected={email(4): ("mapping", "not an opt-in value")},
         accepted={email(1): {"31": 1}, email(2): {"31": 2}, email(3): {"31": 2}}),
    Case("data_null_optin_keeps_consent", "a null opt-in leaves Emarsys's consent alone", 0,
         rows=[person(1, optin=None), person(2, optin=None)],
         prepare=lambda ctx: seed_people(ctx.control, [person(1), person(2)], optin=1),
         accepted={email(1): {"31": 1}, email(2): {"31": 1}}, standard=False),
    typed("a multi-choice list, one with an unknown label", "data_multichoice", 1, {},
          rows=[{"email": email(1), "first_name": "A", "categories": "Shoes, Bags"},
               {"email": email(2), "first_name": "B", "categories": "Shoes, Jewels"}],
         rejected={email(2): ("mapping", "not a choice")},
         accepted={email(1): {"5005": [1, 2]}}),
    Case("data_all_rows_invalid", "every row rejected: nothing sent", 1,
         rows=_people_with_keys(None, "", "nope"),
         rejected={None: ("invalid_key", "null or empty"), "nope": ("invalid_key", "not a valid email")}),
    Case("data_empty_model", "a model with no rows: nothing to do", 0, rows=[], accepted={}),
    Case("data_update_only_unknown_keys", "update_only with keys Emarsys doesn't have", 1, select="known_contacts",
         rows=ok_people(3), prepare=lambda ctx: seed_people(ctx.control, [person(1)]),
         rejected={email(2): ("2008", "No contact found"), email(3): ("2008", "No contact found")},
         accepted={email(1): {"1": "First1"}}, standard=False),
]


# -- the environment ------------------------------------------------------------------------------------


@dataclass
class Ctx:
    project: Path
    emu: Any
    control: Control
    tmp_path: Path
    cleanups: list[Callable] = field(default_factory=list)


def _restricted_user(permissions: list[str]) -> Callable:
    def prepare(ctx: Ctx) -> None:
        ctx.control.seed(users=[{"name": "restricted", "secret": "restricted-secret", "scheme": "oauth",
                                 "permissions": permissions}])
    return prepare


def _lock_database(ctx: Ctx) -> None:
    """Another process holds the DuckDB file (a second writer is refused by DuckDB's file lock)."""
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
                               "print('holding', flush=True); sys.stdin.read()", str(ctx.project / DATABASE)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"

    def release() -> None:
        holder.stdin.close()
        holder.wait(30)
    ctx.cleanups.append(release)


def _drop_model_after_plan(ctx: Ctx) -> None:
    """Drop the model (its view) after the run planned, before it sends: the field catalogue is read
    only once a plan has rows to send, so hold that request and drop the view meanwhile."""
    ctx.control.add_faults({"type": "slow", "seconds": 1.0, "count": 1, "method": "GET", "path": "/field"})

    def drop_when_held() -> None:
        deadline = time.monotonic() + 60
        while ctx.control.pending_faults() and time.monotonic() < deadline:
            time.sleep(0.01)   # polls until the held request has arrived
        import duckdb

        con = duckdb.connect(str(ctx.project / DATABASE))
        try:
            con.execute("drop view main.contacts")
        finally:
            con.close()
    thread = threading.Thread(target=drop_when_held, daemon=True)
    thread.start()
    ctx.cleanups.append(lambda: thread.join(60))


def _artifact_disk_full(ctx: Ctx) -> None:
    """The results artifact is written to a temporary file first: make that file /dev/full, where
    every write fails with ENOSPC ("No space left on device"), as on a full disk. No root needed."""
    tmp = ctx.project / "target" / f"emarsys_sync_results.json.{os.getpid()}.tmp"
    tmp.symlink_to("/dev/full")
    ctx.cleanups.append(lambda: tmp.unlink(missing_ok=True))


def _state_after_disk_full(ctx: Ctx, outcome) -> None:
    # The sync itself went through and its state was committed: the artifact alone is missing.
    assert snapshot_keys(ctx.project, "contacts") == {email(i) for i in (1, 2, 3)}
    assert not (ctx.project / "target" / "emarsys_sync_results.json").exists()


def _results_say_unreachable(ctx: Ctx, outcome) -> None:
    # The run ends as a run: its syncs failed (not skipped), the results file says why, no plan is left.
    artifact = json.loads((ctx.project / "target" / "emarsys_sync_results.json").read_text())
    assert artifact["exit_code"] == 3
    for result in artifact["results"]:
        assert result["status"] == "failed" and "cannot reach Emarsys at http://127.0.0.1:" in result["message"]
        assert result["run_id"]
    assert "reading the Emarsys fields (http://127.0.0.1:" in outcome.stdout   # what it waited on was said


def _model_gone_next_run(ctx: Ctx, outcome) -> None:
    again = cli(ctx.project, ["run", "--select", "contacts"], emulator_env(ctx.emu))
    assert again.exit_code == 2 and "dbt build" in again.stderr, again.describe()


ENVIRONMENT = [
    Case("env_missing_credentials", "no Emarsys credentials at all", 2,
         env={"EMARSYS_CLIENT_ID": None, "EMARSYS_CLIENT_SECRET": None}, error="missing Emarsys credentials"),
    Case("env_half_credentials", "a client id without its secret", 2, env={"EMARSYS_CLIENT_SECRET": None},
         error="EMARSYS_CLIENT_SECRET"),
    Case("env_wrong_oauth_secret", "a wrong OAuth client secret", 2, env={"EMARSYS_CLIENT_SECRET": "wrong"},
         error="credentials rejected", error_also=("EMARSYS_CLIENT_SECRET",)),
    Case("env_wrong_wsse_secret", "a wrong WSSE secret", 2,
         env={"EMARSYS_CLIENT_ID": None, "EMARSYS_CLIENT_SECRET": None, "EMARSYS_USERNAME": "sandbox001",
              "EMARSYS_SECRET": "wrong"}, error="credentials rejected", error_also=("EMARSYS_SECRET",)),
    Case("env_bad_api_url", "an API URL that is not http(s)", 2, env={"EMARSYS_API_URL": "ftp://example.com"},
         error="EMARSYS_API_URL"),
    Case("env_missing_field_permission", "an API user without field.get", 2,
         env={"EMARSYS_CLIENT_ID": "restricted", "EMARSYS_CLIENT_SECRET": "restricted-secret"},
         prepare=_restricted_user(["contact.update", "contact.create"]), error="field.get"),
    Case("env_missing_write_permission", "an API user that may read fields but not write contacts", 3,
         env={"EMARSYS_CLIENT_ID": "restricted", "EMARSYS_CLIENT_SECRET": "restricted-secret"},
         prepare=_restricted_user(["field.get"]), error="contact.update"),
    Case("env_emarsys_unreachable", "Emarsys answers 503 to everything, past the retries", 3,
         prepare=lambda ctx: ctx.control.add_faults({"type": "status", "status": 503, "count": 1000}),
         error="gave up", error_also=("503",), check=_results_say_unreachable),
    Case("env_wrong_target", "a target the profile doesn't have", 2, args=["--target", "nosuch"], error="nosuch"),
    Case("env_wrong_profile", "a profile that doesn't exist", 2, args=["--profile", "nosuch"], error="nosuch"),
    Case("env_database_locked", "another process holds the DuckDB file", 3, args=["--lock-timeout", "1"],
         prepare=_lock_database, error="lock"),
    Case("env_model_dropped_between_plan_and_send", "the model is dropped after the plan: the plan is sent", 0,
         rows=ok_people(3), prepare=_drop_model_after_plan, check=_model_gone_next_run, accepted={}),
    Case("env_artifact_disk_full", "the disk is full when the results artifact is written", 3,
         rows=ok_people(3), prepare=_artifact_disk_full, check=_state_after_disk_full,
         error="emarsys_sync_results.json", error_also=("No space left on device",), accepted={}),
]

CASES = META + DATA + ENVIRONMENT


# -- the test ------------------------------------------------------------------------------------------


def _writes(control: Control) -> list[dict]:
    """Contact and list writes Emarsys accepted (a refused attempt, e.g. 403, wrote nothing)."""
    return [r for r in control.requests() if r["method"] in ("PUT", "POST") and r["status"] == 200
            and any(r["path"].rstrip("/").endswith(w) or f"{w}/" in r["path"] for w in WRITES)]


def _artifact(project: Path) -> dict:
    path = project / "target" / "emarsys_sync_results.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, project, emu, control, tmp_path):
    ctx = Ctx(project, emu, control, tmp_path)
    seed_people(control, OUTSIDERS)
    if case.yaml is not None:
        (project / "models" / "_models.yml").write_text(case.yaml)
    rows = case.rows if case.rows is not None else ok_people()
    if case.select == "typed":
        write_table(project, "raw_typed", case.columns or {}, rows)
        write_people(project, ok_people())
    else:
        write_table(project, "raw_people", case.columns or PEOPLE_COLUMNS, rows)
    write_audience(project, [{"email": email(i), "first_name": f"First{i}"} for i in (1, 2)])
    try:
        if case.prepare:
            case.prepare(ctx)
        before = control.contacts()
        env = {k: v for k, v in {**emulator_env(emu), **case.env}.items() if v is not None}
        outcome = cli(project, ["run", "--select", *case.select.split(), *case.args], env)
        for cleanup in ctx.cleanups:
            cleanup()
        ctx.cleanups.clear()
        _check(case, ctx, before, rows, outcome)
        if case.check:
            case.check(ctx, outcome)
    finally:
        for cleanup in ctx.cleanups:
            cleanup()


def _check(case: Case, ctx: Ctx, before: dict, rows: list[dict], outcome) -> None:
    assert outcome.exception is None and "Traceback" not in outcome.output, outcome.describe()
    assert outcome.exit_code == case.exit_code, outcome.describe()
    after = ctx.control.contacts()
    if case.error is not None:
        for fragment in (case.error, *case.error_also):
            assert fragment in outcome.output, f"the error doesn't name {fragment!r}:\n{outcome.describe()}"
    if case.exit_code == 2 or (case.accepted is None and case.rejected is None):
        # Nothing may have been written: not one contact, not one list.
        assert _writes(ctx.control) == [], f"a configuration error still wrote: {_writes(ctx.control)[:3]}"
        assert after == before
        return
    report = _artifact(ctx.project)
    results = {r["name"]: r for r in report.get("results", [])}
    sync = case.select.split()[0]
    if case.rejected is not None:
        assert sync in results, outcome.describe()
        samples = {(s["key"], s["code"]): s["reason"] for s in results[sync]["rejected_samples"]}
        for key, (code, reason) in case.rejected.items():
            assert (key, code) in samples, f"{key!r} not rejected with {code}: {samples}"
            assert reason in samples[(key, code)], samples[(key, code)]
        assert {k for k, _ in samples} == set(case.rejected), f"other rows were rejected too: {samples}"
    accepted = case.accepted or {}
    accepted_keys = set(accepted) | (_standard_keys(rows, case) if case.standard else set())
    # The emulator: contacts as before, plus the accepted rows; nothing else.
    assert set(after) == set(before) | accepted_keys, (sorted(set(after) - set(before) - accepted_keys),
                                                      sorted(accepted_keys - set(after)))
    for key, contact in after.items():
        if key not in accepted_keys:
            assert contact == before[key], f"{key} changed though the model didn't ask for it"
    for key, values in accepted.items():
        for field_id, value in values.items():
            assert after[key].get(field_id) == value, (key, field_id, after[key].get(field_id), value)
    if case.standard:
        accepted_rows = [r for r in rows if r["email"] is not None and r["email"].strip().lower() in accepted_keys]
        expected = expected_contacts(before, accepted_rows, sync, create=sync != "known_contacts")
        assert {k: after[k] for k in accepted_keys} == {k: expected[k] for k in accepted_keys}
    # The state acknowledges exactly the accepted keys.
    if sql(ctx.project, f"select count(*) from information_schema.tables where table_schema = '{STATE_SCHEMA}'"
                        " and table_name = 'sync_snapshot'")[0][0]:
        assert snapshot_keys(ctx.project, sync) == accepted_keys


def _standard_keys(rows: list[dict], case: Case) -> set[str]:
    """Rows of a standard case that must be accepted: every one not listed as rejected."""
    rejected = set(case.rejected or {})
    keys = set()
    for row in rows:
        key = row.get("email")
        if key is None or not key.strip():
            continue
        key = key.strip().lower()
        if key not in rejected and key.strip() not in rejected:
            keys.add(key)
    return keys


def test_corpus_size():
    """At least 40 cases; every one has an expected exit code and outcome."""
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
