"""What the reliability scenarios share: the fixture dbt project, its raw tables, the emulator's control
API, the CLI run in-process or as a subprocess, and the invariants every scenario checks.

The fixture project (`project/`) has three models, one per behaviour, each a view over a raw table the
tests write with DuckDB: a test changes a model's rows (or its column types) without a dbt build.

    contacts        update_or_create   over raw_people
    known_contacts  update_only        over raw_people
    audience        mirror (list "Reliability audience")   over raw_audience
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import duckdb
import httpx
from click.testing import CliRunner

from dbt_emarsys_sync.cli import main as cli_main
from tests.conftest import BIN, run_dbt

HERE = Path(__file__).resolve().parent
PROJECT_TEMPLATE = HERE / "project"
DATABASE = Path("target") / "reliability.duckdb"
STATE_SCHEMA = "main_emarsys_sync"
LIST_NAME = "Reliability audience"

PEOPLE_COLUMNS = {
    "email": "varchar", "first_name": "varchar", "last_name": "varchar", "optin": "boolean",
    "lifetime_value": "decimal(12, 2)", "loyalty_tier": "varchar", "birth_date": "date", "notes": "varchar",
}
AUDIENCE_COLUMNS = {"email": "varchar", "first_name": "varchar"}
# raw_typed (the `typed` sync): text by default; a case gives the columns it tests their own types.
TYPED_COLUMNS = {"email": "varchar", "first_name": "varchar", "last_name": "varchar", "notes": "varchar",
                 "optin": "varchar", "lifetime_value": "varchar", "birth_date": "varchar", "signed_up_at": "varchar",
                 "categories": "varchar"}

# Model column -> the Emarsys field id it is mapped to (project/models/_models.yml).
FIELD_IDS = {"first_name": "1", "last_name": "2", "optin": "31", "lifetime_value": "5001",
             "loyalty_tier": "5003", "birth_date": "4", "notes": "5006"}
SYNC_FIELDS = {
    "contacts": ("first_name", "last_name", "optin", "lifetime_value", "loyalty_tier", "birth_date", "notes"),
    "known_contacts": ("first_name", "last_name", "optin", "lifetime_value"),
    "audience": ("first_name",),
}
TIERS = {"Bronze": 1, "Silver": 2, "Gold": 3, "Platinum": 4}
EMAIL_FIELD = "3"


# -- the fixture project ----------------------------------------------------------------------------


def person(i: int, **overrides: Any) -> dict:
    """A deterministic, valid row of raw_people. Every seventh has a null opt-in (the model says
    nothing about consent: Emarsys's value must stay)."""
    row = {
        "email": f"person.{i}@reliability.example.com",
        "first_name": f"First{i}",
        "last_name": f"Last{i}",
        "optin": None if i % 7 == 0 else i % 2 == 0,
        "lifetime_value": Decimal(f"{i * 37 % 10000}.{i % 100:02d}"),
        "loyalty_tier": list(TIERS)[i % 4],
        "birth_date": date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
        "notes": f"note {i}",
    }
    row.update(overrides)
    return row


def ok_people_rows(n: int) -> list[dict]:
    return [person(i) for i in range(1, n + 1)]


def member(i: int) -> dict:
    return {"email": f"person.{i}@reliability.example.com", "first_name": f"First{i}"}


def write_table(project: Path, table: str, columns: dict[str, str], rows: Iterable[dict]) -> None:
    """Replace the raw table `table` (schema main) with `rows`, typed as `columns`."""
    names = list(columns)
    con = duckdb.connect(str(project / DATABASE))
    try:
        con.execute(f"create or replace table main.{table} ("
                    + ", ".join(f'"{n}" {t}' for n, t in columns.items()) + ")")
        values = [tuple(row.get(n) for n in names) for row in rows]
        if values:
            con.executemany(f"insert into main.{table} values ({', '.join('?' * len(names))})", values)
    finally:
        con.close()


def write_people(project: Path, rows: Iterable[dict]) -> None:
    write_table(project, "raw_people", PEOPLE_COLUMNS, rows)


def write_audience(project: Path, rows: Iterable[dict]) -> None:
    write_table(project, "raw_audience", AUDIENCE_COLUMNS, rows)


def sql(project: Path, query: str) -> list[tuple]:
    """A read of the project's DuckDB file (the models and the state schema). Not read-only: DuckDB
    refuses a second configuration of a file this process (an in-process run) still has open."""
    con = duckdb.connect(str(project / DATABASE))
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _pin_database(project: Path) -> None:
    """Point the profile at this copy's DuckDB file by its absolute path. dbt-duckdb keeps one open
    database per process for as long as the profile's credentials are equal, and a relative path is
    equal in every copy: in-process runs of two copies would share the first one's file."""
    profiles = project / "profiles.yml"
    text, mtime = profiles.read_text(), profiles.stat().st_mtime
    marker = "path: "
    start = text.index(marker) + len(marker)
    end = text.index("\n", start)
    profiles.write_text(text[:start] + str(project / DATABASE) + text[end:])
    # The project's files are as old as they were: the copied manifest stays current (no dbt parse).
    os.utime(profiles, (mtime, mtime))


def build_project(dest: Path) -> Path:
    """Copy the fixture project to `dest`, create its raw tables and `dbt build` it (about 10 s)."""
    shutil.copytree(PROJECT_TEMPLATE, dest, ignore=shutil.ignore_patterns("target", "logs"))
    (dest / "target").mkdir()
    _pin_database(dest)
    write_people(dest, [person(i) for i in range(1, 6)])
    write_audience(dest, [member(i) for i in range(1, 6)])
    write_table(dest, "raw_typed", TYPED_COLUMNS, [{"email": member(i)["email"]} for i in range(1, 3)])
    run_dbt(["build"], cwd=dest)
    return dest


def copy_project(built: Path, dest: Path) -> Path:
    shutil.copytree(built, dest, ignore=shutil.ignore_patterns("logs"))
    _pin_database(dest)
    return dest


# -- the emulator, through its control API (contracts.md item 1) --------------------------------------


class Control:
    """The emulator's `/_emulator/*` routes, over HTTP, as any client of the sandbox would use them."""

    def __init__(self, emu):
        self.emu = emu
        self.http = httpx.Client(base_url=emu.url, timeout=30)

    def _post(self, path: str, body: Any = None) -> Any:
        response = self.http.post(path, json=body if body is not None else {})
        assert response.status_code == 200, f"POST {path}: {response.status_code} {response.text}"
        return response.json()

    def add_faults(self, *faults: dict) -> None:
        self._post("/_emulator/faults", {"faults": list(faults)})

    def pending_faults(self) -> list[dict]:
        return self.http.get("/_emulator/faults").json()["faults"]

    def clear_faults(self) -> None:
        self.http.delete("/_emulator/faults").raise_for_status()

    def settings(self, **changes: Any) -> dict:
        return self._post("/_emulator/settings", changes)

    def expire_tokens(self) -> int:
        return self._post("/_emulator/tokens/expire")["expired"]

    def seed(self, **data: Any) -> dict:
        return self._post("/_emulator/seed", data)

    def contacts(self) -> dict[str, dict]:
        """Every contact by email, without the emulator's own `id` and `uid`."""
        out = {}
        for contact in self.http.get("/_emulator/contacts").json():
            email = contact.get(EMAIL_FIELD)
            assert email not in out, f"two contacts hold the email {email!r}"
            out[email] = {k: canonical(k, v) for k, v in contact.items() if k not in ("id", "uid") and v is not None}
        return out

    def lists(self) -> dict[str, set[str]]:
        return {cl["name"]: set(cl["emails"]) for cl in self.http.get("/_emulator/lists").json()}

    def requests(self) -> list[dict]:
        return self.http.get("/_emulator/requests").json()

    def close(self) -> None:
        self.http.close()


def canonical(field_id: str, value: Any) -> Any:
    """Numbers compared as numbers: "370.10" and "370.1" are the same lifetime value."""
    if field_id == FIELD_IDS["lifetime_value"]:
        return format(Decimal(value).normalize(), "f")
    return value


def seed_people(control: Control, rows: Iterable[dict], optin: int = 1) -> None:
    """Contacts that exist in Emarsys before any sync, with other values than the model's and the
    given opt-in (1 = opted in), so a test sees every value the run changed or must not change."""
    control.seed(contacts=[{EMAIL_FIELD: r["email"], "1": "Seeded", "2": "Before", "31": optin}
                           for r in rows])


# -- running the CLI --------------------------------------------------------------------------------


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"


def emulator_env(emu, scheme: str = "oauth", **extra: str) -> dict[str, str]:
    config = emu.emulator.config
    env = {"EMARSYS_API_URL": emu.url, "EMARSYS_AUTH_URL": emu.token_url}
    if scheme == "oauth":
        env.update(EMARSYS_CLIENT_ID=config.client_id, EMARSYS_CLIENT_SECRET=config.client_secret)
    else:
        env.update(EMARSYS_USERNAME=config.username, EMARSYS_SECRET=config.secret)
    env.update(extra)
    return env


def cli(project: Path, args: list[str], env: dict[str, str], *, logs: bool = False) -> Outcome:
    """`dbt-emarsys-sync ARGS` in this process (click's test runner: the real command, its exit code
    and its output), from the project directory as a user runs it. In-process, dbt stays imported
    between runs: a run takes a second instead of seven.

    `logs`: the command's log lines reach its stderr, as in a process of its own. (Under pytest the
    root logger already has pytest's handlers, so the command's `logging.basicConfig` would add none:
    they are set aside for the call.)"""
    # Unset whatever the surrounding environment says about Emarsys or dbt; set only `env`.
    full_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("EMARSYS_", "DBT_"))}
    full_env.update(env)
    previous = os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    if logs:
        root.handlers = []
    os.chdir(project)
    try:
        result = CliRunner().invoke(cli_main, args, env=full_env, catch_exceptions=True)
    finally:
        os.chdir(previous)
        if logs:
            root.handlers = saved_handlers
            root.setLevel(saved_level)
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    outcome = Outcome(result.exit_code, result.stdout, result.stderr, exception)
    if exception is not None:
        import traceback

        outcome.stderr += "".join(traceback.format_exception(exception))
    return outcome


def cli_subprocess(project: Path, args: list[str], env: dict[str, str], timeout: float = 300) -> Outcome:
    """`dbt-emarsys-sync ARGS` as its own process (for what must be seen from outside: logs, kills)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
    full_env.update(env)
    proc = subprocess.run([str(BIN / "dbt-emarsys-sync"), *args], cwd=project, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def runner_command() -> list[str]:
    return [str(BIN / "dbt-emarsys-sync")]


PYTHON = sys.executable


# -- what a scenario expects ---------------------------------------------------------------------------


def wire_value(column: str, value: Any) -> Any:
    """What the emulator stores for a model value of the fixture's columns (as /_emulator/contacts
    shows it)."""
    if value is None:
        return None
    if column == "optin":
        return 1 if value else 2
    if column == "lifetime_value":
        return canonical(FIELD_IDS[column], value)
    if column == "loyalty_tier":
        return TIERS[value]
    if column == "birth_date":
        return value.isoformat()
    return value


def expected_contacts(before: dict[str, dict], rows: Iterable[dict], sync: str, *, create: bool
                      ) -> dict[str, dict]:
    """The emulator's contacts after a complete run of `sync` over `rows`: every contact as it was,
    plus the model's non-null values (null_policy skip) on the model's keys; new keys only when the
    sync creates."""
    expected = {email: dict(contact) for email, contact in before.items()}
    for row in rows:
        key = row["email"].strip().lower()
        if key not in expected:
            if not create:
                continue
            expected[key] = {EMAIL_FIELD: key}
        for column in SYNC_FIELDS[sync]:
            value = wire_value(column, row.get(column))
            if value is not None:
                expected[key][FIELD_IDS[column]] = value
    return expected


def assert_contacts_equal(actual: dict[str, dict], expected: dict[str, dict]) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing, f"{len(missing)} contacts missing in the emulator, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} contacts the model didn't ask for, e.g. {extra[:3]}"
    wrong = {email: (actual[email], expected[email]) for email in expected if actual[email] != expected[email]}
    assert not wrong, (f"{len(wrong)} contacts differ from the model (actual, expected), e.g. "
                       f"{list(wrong.items())[:3]}")


def assert_no_key_twice_in_a_request(requests: list[dict]) -> None:
    for entry in requests:
        keys = entry.get("keys") or []
        twice = [k for k, n in Counter(keys).items() if n > 1]
        assert not twice, f"{entry['method']} {entry['path']} carried the keys {twice[:5]} more than once"


def contacts_sent(requests: list[dict]) -> int:
    """Contacts the emulator received in contact writes (PUT/POST /contact)."""
    return sum(len(r.get("keys") or []) for r in requests
               if r["method"] in ("PUT", "POST") and r["path"].rstrip("/").endswith("/contact"))


def snapshot_keys(project: Path, sync: str) -> set[str]:
    return {r[0] for r in sql(project, f"select sync_key from {STATE_SCHEMA}.sync_snapshot "
                                       f"where sync_name = '{sync}'")}


def snapshot_keys_with_current_values(project: Path, sync: str) -> set[str]:
    """Keys whose acknowledged hash is the one the model's current row would have: what the next run
    would not send again. Read from the next plan instead of re-computing hashes: a dry run."""
    return snapshot_keys(project, sync) - planned_keys(project, sync)


def planned_keys(project: Path, sync: str) -> set[str]:
    """Keys a run would send now (new or changed): `plan --output json` samples are capped, so ask
    the state tables through the diff the runner itself makes."""
    outcome = cli(project, ["plan", "--select", sync, "--samples", "100000", "--output", "json"], {})
    assert outcome.exit_code in (0, 1), outcome.describe()
    import json

    result = next(r for r in json.loads(outcome.stdout)["results"] if r["name"] == sync)
    samples = result.get("samples") or {}
    return {row["key"] for category in ("new", "changed") for row in samples.get(category, [])}


def rejected_keys(project: Path, sync: str) -> dict[str, str]:
    """Key -> code of the rows the state records as rejected for `sync`."""
    return {r[0]: r[1] for r in sql(project, f"select sync_key, code from {STATE_SCHEMA}.sync_rejected "
                                             f"where sync_name = '{sync}'")}


def pending_plans(project: Path, sync: str) -> list[str]:
    return [r[0] for r in sql(project, f"select run_id from {STATE_SCHEMA}.sync_plans where sync_name = '{sync}'")]


def locks(project: Path) -> list[tuple]:
    return sql(project, f"select sync_name, run_id, pid from {STATE_SCHEMA}.sync_locks")
