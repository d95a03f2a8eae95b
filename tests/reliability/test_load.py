"""Load: two runs of one project at the same time, and twenty syncs sharing one rate limit.

- Two concurrent runs of the same sync, as two processes, on DuckDB (the database file's lock) and on
  PostgreSQL (the sync's lock row in the state schema): one sends, the other waits and finds nothing
  left; every key reaches Emarsys exactly once, and the state is whole.
- Twenty syncs in one run (`--threads 20`) against an emulator enforcing the API user's limit: the
  client paces every sync's requests within that one limit, so no 429 comes back and all complete.
  Shortened variant: a limit of 600 requests a minute that the client knows (EMARSYS_RATE_LIMIT); the
  requests must be spread at that pace (twenty unshared limiters would send them all at once).
  Full variant (slow): a limit of 60 that the client doesn't know (it assumes 1,000): 429s may come in
  the first window only; the client learns from the rate-limit headers and all syncs complete.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from dbt_emarsys_sync.emulator import EmulatorConfig, EmulatorThread
from tests.conftest import run_dbt
from tests.postgres import postgres_server  # noqa: F401 - the session fixture
from tests.reliability.support import (BIN, Control, assert_contacts_equal, assert_no_key_twice_in_a_request,
                                       cli, copy_project, emulator_env, expected_contacts, ok_people_rows,
                                       write_people, write_table)

pytestmark = pytest.mark.reliability

ROWS = 300


def _start(project: Path, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
    full_env.update(env)
    with open(log, "w") as out:
        return subprocess.Popen([str(BIN / "dbt-emarsys-sync"), *args], cwd=project, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)


def _two_runs_at_once(project: Path, emu, control: Control, tmp_path: Path, extra: list[str]) -> list[str]:
    rows = ok_people_rows(ROWS)
    before = control.contacts()
    # The first requests answer slowly, so that the runs overlap whichever starts sending first.
    control.add_faults({"type": "slow", "seconds": 1.5, "count": 6, "method": "PUT", "path": "/contact"})
    args = ["run", "--select", "contacts", "--batch-size", "50", "--lock-timeout", "120", *extra]
    procs = [_start(project, args, emulator_env(emu), tmp_path / f"run-{n}.log") for n in (1, 2)]
    started = time.monotonic()
    codes = [p.wait(300) for p in procs]
    # Both processes were alive at once (neither ended before the other had started its work).
    assert time.monotonic() - started > 1.5
    logs = [(tmp_path / f"run-{n}.log").read_text() for n in (1, 2)]
    assert codes == [0, 0], logs
    requests = control.requests()
    sent = Counter(k for r in requests if r["method"] == "PUT" for k in r.get("keys") or ())
    twice = [k for k, n in sent.items() if n > 1]
    assert not twice, f"{len(twice)} keys were sent twice, e.g. {twice[:3]}"
    assert len(sent) == ROWS
    assert_contacts_equal(control.contacts(), expected_contacts(before, rows, "contacts", create=True))
    assert_no_key_twice_in_a_request(requests)
    return logs


def test_two_concurrent_runs_duckdb(project, emu, control, tmp_path):
    write_people(project, ok_people_rows(ROWS))
    logs = _two_runs_at_once(project, emu, control, tmp_path, [])
    # One of them sent everything; the other waited for the database file and found nothing to send.
    assert sum("sending contacts (300 rows)" in log for log in logs) == 1, logs


@pytest.mark.postgres
def test_two_concurrent_runs_postgres(postgres_server, built_project, tmp_path, emu, control):  # noqa: F811
    """On PostgreSQL both runs open the warehouse at once: the sync's lock row decides."""
    project = copy_project(built_project, tmp_path / "project")
    database = postgres_server.create_database(f"reliability_{uuid.uuid4().hex[:8]}")
    profiles = yaml.safe_load((project / "profiles.yml").read_text())
    profiles["reliability"]["outputs"]["pg"] = postgres_server.profile(database, schema="public", threads=4)
    (project / "profiles.yml").write_text(yaml.safe_dump(profiles))
    values = ",\n".join(
        f"('{r['email']}', '{r['first_name']}', '{r['last_name']}', {str(r['optin']).lower() if r['optin'] is not None else 'null'}, "
        f"{r['lifetime_value']}, '{r['loyalty_tier']}', '{r['birth_date'].isoformat()}', '{r['notes']}')"
        for r in ok_people_rows(ROWS))
    postgres_server.psql(
        "create schema main; create table main.raw_people (email text, first_name text, last_name text, "
        "optin boolean, lifetime_value numeric(12, 2), loyalty_tier text, birth_date date, notes text); "
        "create table main.raw_audience (email text, first_name text); "
        "create table main.raw_typed (email text, first_name text, last_name text, notes text, optin text, "
        "lifetime_value text, birth_date text, signed_up_at text, categories text); "
        f"insert into main.raw_people values {values};", database)
    run_dbt(["build", "--target", "pg"], cwd=project)
    logs = _two_runs_at_once(project, emu, control, tmp_path, ["--target", "pg"])
    assert sum("sending contacts (300 rows)" in log for log in logs) == 1, logs
    state = postgres_server.psql("select count(*) from public_emarsys_sync.sync_snapshot; "
                                 "select count(*) from public_emarsys_sync.sync_locks; "
                                 "select count(*) from public_emarsys_sync.sync_plans", database).split()
    assert state == [str(ROWS), "0", "0"], state
    # The runs held the sync one after the other: a run is recorded once it holds the lock, until it
    # lets go, and the two records don't overlap.
    runs = [line.split("|") for line in postgres_server.psql(
        "select extract(epoch from started_at), extract(epoch from finished_at) "
        "from public_emarsys_sync.sync_runs order by started_at", database).split()]
    assert len(runs) == 2 and float(runs[1][0]) >= float(runs[0][1]), runs


# -- twenty syncs, one rate limit --------------------------------------------------------------------


SYNCS = 20
PER_SYNC = 100           # rows per sync: with --batch-size 50, two contact requests each


def _add_twenty_syncs(project: Path) -> None:
    """Models slice_01..slice_20 (views over raw_slices), each with its own sync, built with dbt."""
    folder = project / "models" / "slices"
    folder.mkdir()
    models = []
    for n in range(1, SYNCS + 1):
        (folder / f"slice_{n:02d}.sql").write_text(f"select * from {{{{ source('raw', 'raw_slices') }}}} where slice = {n}\n")
        models.append({"name": f"slice_{n:02d}", "config": {"meta": {"emarsys": {"syncs": [{
            "name": f"slice_{n:02d}", "behaviour": "update_or_create", "key": {"column": "email", "field": "email"},
            "fields": {"first_name": "first_name", "last_name": "last_name"}}]}}}})
    (folder / "_slices.yml").write_text(yaml.safe_dump({"version": 2, "models": models}))
    sources = yaml.safe_load((project / "models" / "_sources.yml").read_text())
    sources["sources"][0]["tables"].append({"name": "raw_slices"})
    (project / "models" / "_sources.yml").write_text(yaml.safe_dump(sources))
    write_table(project, "raw_slices", {"slice": "integer", "email": "varchar", "first_name": "varchar",
                                        "last_name": "varchar"},
                [{"slice": n, "email": f"s{n}.p{i}@load.example.com", "first_name": f"F{i}", "last_name": f"L{n}"}
                 for n in range(1, SYNCS + 1) for i in range(PER_SYNC)])
    run_dbt(["build", "--select", "path:models/slices"], cwd=project)


def _twenty_syncs(project: Path, emu, client_limit: int | None, batch: int = 50) -> tuple[list[dict], float]:
    _add_twenty_syncs(project)
    env = emulator_env(emu)
    if client_limit is not None:
        env["EMARSYS_RATE_LIMIT"] = str(client_limit)
    t0 = time.monotonic()
    outcome = cli(project, ["run", "--select", "path:models/slices", "--threads", str(SYNCS), "--batch-size",
                            str(batch)], env)
    seconds = time.monotonic() - t0
    assert outcome.exit_code == 0, outcome.describe()
    control = Control(emu)
    contacts = control.contacts()
    assert len(contacts) == SYNCS * PER_SYNC
    requests = control.requests()
    assert_no_key_twice_in_a_request(requests)
    control.close()
    return requests, seconds


def test_twenty_syncs_share_one_rate_limit(project, tmp_path):
    limit = 600
    with EmulatorThread(EmulatorConfig(rate_limit=limit)) as emu:
        requests, seconds = _twenty_syncs(project, emu, client_limit=limit)
    api = [r for r in requests if r["path"].startswith("/api/")]
    assert not [r for r in api if r["status"] == 429], "the emulator answered 429"
    assert len(api) >= SYNCS * 2
    # One limit for all: request starts are paced at the limit (10 a second), where twenty limiters of
    # their own would let the syncs' first requests out together.
    starts = sorted(r["time"] for r in api)
    span = starts[-1] - starts[0]
    assert span >= 0.8 * (len(starts) - 1) / (limit / 60), f"{len(starts)} requests within {span:.1f}s"
    print(f"twenty syncs: {len(api)} API requests over {span:.1f}s, the run took {seconds:.1f}s")


@pytest.mark.slow
def test_twenty_syncs_learn_an_unknown_rate_limit(project, tmp_path):
    limit = 60
    with EmulatorThread(EmulatorConfig(rate_limit=limit)) as emu:
        # 20 syncs x 5 requests: more than one window's worth; the client assumes 1,000 a minute.
        requests, seconds = _twenty_syncs(project, emu, client_limit=None, batch=20)
    api = [r for r in requests if r["path"].startswith("/api/")]
    assert len(api) > limit
    first = min(r["time"] for r in api)
    assert max(r["time"] for r in api) - first > 60, "the requests fitted one window: the limit was not in play"
    late_429s = [r for r in api if r["status"] == 429 and r["time"] > first + 60]
    assert not late_429s, f"{len(late_429s)} answers 429 after the first window"
    print(f"twenty syncs, unknown limit: {len(api)} API requests in {seconds:.1f}s, "
          f"{sum(r['status'] == 429 for r in api)} answered 429, none after the first minute")
