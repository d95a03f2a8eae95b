"""The state schema and the diff, on DuckDB and PostgreSQL: what a plan holds, what a fold keeps, what a
crashed run leaves, locks and migrations."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dbt_emarsys_sync.dbt.state import (REJECT, REMOVE, UPSERT, LockTimeout, SCHEMA_VERSION,
                                        new_run_id)
from dbt_emarsys_sync.dbt.warehouse import literal
from dbt_emarsys_sync.errors import ConfigError

COLUMNS = {"email": "varchar(200)", "first_name": "varchar(100)", "ltv": "decimal(12, 2)"}
ROWS = [
    ("anna@example.com", "Anna", "10.50"),
    ("  Ben@Example.COM ", "Ben", "20.00"),
    ("chloe@example.com", "Chloé", None),
]


def plan(store, job, *, full_refresh=False, members_table=None):
    job.run_id = new_run_id()
    store.record_run_start(job.run_id, job.name, job.sync.model.name, "contact", "update_or_create", full_refresh)
    job.plan = store.create_plan(job.shape, job.run_id, full_refresh=full_refresh, members_table=members_table)
    return job.plan


def plan_rows(store, table, action=None):
    where = f" where action = '{action}'" if action else ""
    return store.wh.fetch(f"select seq, action, reason_code, key_rows, known, sync_key from {table}{where} order by seq")


def ack_all(store, job, rejections=()):
    """Acknowledge every row of the plan as one checkpoint, except `rejections` (seq, key, code, message)."""
    for lo, hi in (job.plan.upsert_range, job.plan.remove_range):
        if lo <= hi:
            store.checkpoint(job.name, job.run_id, [(lo, hi)], list(rejections))
            rejections = ()
    return store.fold(job.name, job.run_id, job.plan.table, completed=True)


def snapshot(store, name):
    return dict(store.wh.fetch(f"select sync_key, row_hash from {store.snapshot} where sync_name = {literal(name)}"))


def new_sync(warehouse, rows=ROWS, columns=COLUMNS, **spec):
    relation = warehouse.table(columns, rows)
    spec.setdefault("fields", {"first_name": "first_name", "ltv": "lifetime_value"})
    job = warehouse.job(warehouse.sync(relation, **spec))
    store = warehouse.store()
    store.migrate()
    return relation, job, store


# -- migrations ------------------------------------------------------------------------------------


def test_migrate_creates_a_versioned_schema_once(warehouse):
    store = warehouse.store()
    assert not store.exists()
    assert store.migrate() == SCHEMA_VERSION
    assert store.exists() and store.version() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION          # idempotent
    rows = store.wh.fetch(f"select version from {store.version_table} order by version")
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]   # each migration once, in order
    for table in ("sync_snapshot", "sync_rejected", "sync_runs", "sync_locks", "sync_plans", "sync_progress",
                  "sync_targets"):
        assert store.wh.table_exists(store.schema, table), table


def test_a_version_1_state_is_upgraded_in_place(warehouse):
    """A state written before syncs recorded their Emarsys (version 1) keeps its snapshot; the table
    arrives with migration 2 and each sync records its Emarsys on its next run."""
    relation, job, store = new_sync(warehouse)
    plan(store, job)
    ack_all(store, job)
    store.wh.execute(f"drop table {store.targets}", f"delete from {store.version_table} where version = 2")
    assert store.version() == 1 and store.bound_targets() == {}
    assert store.migrate() == SCHEMA_VERSION == 2
    assert len(snapshot(store, job.name)) == 3 and store.bound_targets() == {}
    store.bind_target(job.name, "https://api.emarsys.net", "crm-user")
    assert store.bound_targets() == {job.name: ("https://api.emarsys.net", "crm-user")}
    store.reset(job.name)
    assert store.bound_targets() == {}


def test_a_state_schema_newer_than_the_code_is_refused(warehouse):
    store = warehouse.store()
    store.migrate()
    store.wh.execute(f"insert into {store.version_table} (version) values ({SCHEMA_VERSION + 1})")
    with pytest.raises(ConfigError, match="newer than this dbt-emarsys-sync understands"):
        store.migrate()


def test_default_state_schema_is_derived_from_the_target_schema(warehouse):
    from dbt_emarsys_sync.dbt.state import StateStore

    assert StateStore(warehouse.wh).schema == f"{warehouse.wh.target_schema}_emarsys_sync"


# -- the diff --------------------------------------------------------------------------------------


def test_first_plan_sends_every_row_with_normalised_keys(warehouse):
    _, job, store = new_sync(warehouse)
    summary = plan(store, job)
    assert (summary.model_rows, summary.new, summary.changed, summary.unchanged) == (3, 3, 0, 0)
    keys = [r[5] for r in plan_rows(store, summary.table, UPSERT)]
    assert sorted(keys) == ["anna@example.com", "ben@example.com", "chloe@example.com"]


def test_normalisation_can_be_switched_off(warehouse):
    _, job, store = new_sync(warehouse, normalize_email=False)
    keys = [r[5] for r in plan_rows(store, plan(store, job).table)]
    # Trimmed always (surrounding spaces are never part of a key), but the case is kept.
    assert "Ben@Example.COM" in keys


def test_nothing_changed_means_an_empty_plan(warehouse):
    _, job, store = new_sync(warehouse)
    plan(store, job)
    assert ack_all(store, job) == (3, 0)
    second = plan(store, job)
    assert (second.new, second.changed, second.unchanged, second.has_work) == (0, 0, 3, False)
    assert plan_rows(store, second.table) == []


def test_only_the_changed_row_is_planned(warehouse):
    relation, job, store = new_sync(warehouse)
    plan(store, job)
    ack_all(store, job)
    changed = [ROWS[0], (ROWS[1][0], "Benjamin", ROWS[1][2]), ROWS[2]]
    warehouse.replace_rows(relation, COLUMNS, changed)
    second = plan(store, job)
    assert (second.new, second.changed, second.unchanged) == (0, 1, 2)
    assert [r[5] for r in plan_rows(store, second.table, UPSERT)] == ["ben@example.com"]


def test_null_and_value_and_empty_text_hash_differently(warehouse):
    relation, job, store = new_sync(warehouse, rows=[("a@example.com", None, "1.00")])
    plan(store, job)
    ack_all(store, job)
    # null -> empty text -> text -> null: each step is a change.
    for value in ("", "x", None):
        warehouse.replace_rows(relation, COLUMNS, [("a@example.com", value, "1.00")])
        assert plan(store, job).changed == 1, value
        ack_all(store, job)
    assert plan(store, job).changed == 0


def test_a_changed_mapping_resends_every_row(warehouse):
    relation, job, store = new_sync(warehouse)
    plan(store, job)
    ack_all(store, job)
    remapped = warehouse.job(warehouse.sync(relation, name=job.name, fields={"first_name": "first_name"}))
    summary = plan(store, remapped)
    assert (summary.changed, summary.unchanged) == (3, 0)
    # The behaviour is part of the fingerprint too.
    only_update = warehouse.job(warehouse.sync(relation, name=job.name, behaviour="update_only",
                                               fields={"first_name": "first_name", "ltv": "lifetime_value"}))
    store.drop_plan(remapped.name, remapped.run_id, summary.table)
    assert plan(store, only_update).changed == 3


def test_null_empty_invalid_and_duplicate_keys_are_rejected_every_row(warehouse):
    rows = [("ok@example.com", "A", "1"), (None, "B", "1"), ("   ", "C", "1"), ("not-an-email", "D", "1"),
            ("dup@example.com", "E", "1"), (" DUP@example.com", "F", "2"), ("dup@example.com", "G", "3")]
    _, job, store = new_sync(warehouse, rows=rows)
    summary = plan(store, job)
    assert summary.sql_rejected == 6
    assert summary.sql_rejected_by_code == {"invalid_key": 3, "duplicate_key": 3}
    assert (summary.new, summary.model_rows, summary.unchanged) == (1, 7, 0)
    dup_rows = [r for r in plan_rows(store, summary.table, REJECT) if r[2] == "duplicate_key"]
    assert {r[5] for r in dup_rows} == {"dup@example.com"} and {r[3] for r in dup_rows} == {3}
    recorded = store.wh.fetch(f"select code, message from {store.rejected} where run_id = {literal(job.run_id)} "
                              f"order by code, message")
    assert len(recorded) == 6
    assert ("duplicate_key", "the key appears 3 times in the model; every row of it is rejected") in recorded
    assert ("invalid_key", "'not-an-email' is not a valid email address") in recorded


def test_a_key_that_becomes_duplicated_is_not_sent_even_when_one_row_is_unchanged(warehouse):
    relation, job, store = new_sync(warehouse)
    plan(store, job)
    ack_all(store, job)
    warehouse.replace_rows(relation, COLUMNS, ROWS + [("anna@example.com", "Other Anna", "1.00")])
    summary = plan(store, job)
    assert summary.upserts == 0
    assert summary.sql_rejected_by_code == {"duplicate_key": 2}


def test_departed_contact_keys_are_forgotten_and_list_members_removed(warehouse):
    relation, job, store = new_sync(warehouse)
    plan(store, job)
    ack_all(store, job)
    warehouse.replace_rows(relation, COLUMNS, ROWS[:2])
    summary = plan(store, job)
    assert (summary.forgotten, summary.removals, summary.has_work) == (1, 0, False)
    store.fold(job.name, job.run_id, summary.table, completed=True)
    assert set(snapshot(store, job.name)) == {"anna@example.com", "ben@example.com"}

    mirror_rel, mirror, mstore = new_sync(warehouse, object="contact_list", behaviour="mirror", list="VIP",
                                          fields={})
    plan(mstore, mirror)
    ack_all(mstore, mirror)
    warehouse.replace_rows(mirror_rel, COLUMNS, ROWS[1:])
    summary = plan(mstore, mirror)
    assert (summary.removals, summary.snapshot_rows) == (1, 3)
    assert [r[5] for r in plan_rows(mstore, summary.table, REMOVE)] == ["anna@example.com"]
    assert ack_all(mstore, mirror) == (0, 1)
    assert set(snapshot(mstore, mirror.name)) == {"ben@example.com", "chloe@example.com"}


def test_full_refresh_plans_every_row_again(warehouse):
    _, job, store = new_sync(warehouse)
    plan(store, job)
    ack_all(store, job)
    summary = plan(store, job, full_refresh=True)
    assert (summary.changed, summary.unchanged, summary.full_refresh) == (3, 0, True)


def test_timestamps_with_time_zone_hash_the_same_in_any_session_time_zone(warehouse):
    columns = {"email": "varchar(200)", "seen_at": "timestamp with time zone"}
    relation, job, store = new_sync(warehouse, rows=[("a@example.com", "2026-01-02 03:04:05+00")],
                                    columns=columns, fields={"seen_at": "signup_date"})
    setting = "set TimeZone = '{}'" if warehouse.kind == "duckdb" else "set timezone = '{}'"
    store.wh.execute(setting.format("Europe/Berlin"))
    plan(store, job)
    ack_all(store, job)
    store.wh.execute(setting.format("America/New_York"))
    try:
        assert plan(store, job).changed == 0
    finally:
        store.wh.execute(setting.format("UTC"))


def test_a_plan_holds_timestamps_with_time_zone_as_the_same_instants_in_any_session_time_zone(warehouse):
    """The plan keeps a tz-aware column as UTC wall time (cheaper to fetch); mapping.as_utc gives back the instant,
    whatever the session's time zone was when the plan was made or read."""
    from datetime import datetime, timezone

    from dbt_emarsys_sync.mapping import as_utc

    columns = {"email": "varchar(200)", "seen_at": "timestamp with time zone"}
    _, job, store = new_sync(warehouse, rows=[("a@example.com", "2026-01-02 03:04:05+00"),
                                              ("b@example.com", "2026-06-30 23:30:00-02")],
                             columns=columns, fields={"seen_at": "signup_date"})
    assert job.shape.utc_columns == {"seen_at"}
    setting = "set TimeZone = '{}'" if warehouse.kind == "duckdb" else "set timezone = '{}'"
    store.wh.execute(setting.format("Asia/Tokyo"))
    try:
        summary = plan(store, job)
        store.wh.execute(setting.format("America/New_York"))
        rows = [row for page in store.read_plan(summary.table, *summary.upsert_range) for row in page]
    finally:
        store.wh.execute(setting.format("UTC"))
    seen = {row.key: as_utc(row.values[job.shape.read_columns.index("seen_at")]) for row in rows}
    assert seen == {"a@example.com": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                    "b@example.com": datetime(2026, 7, 1, 1, 30, tzinfo=timezone.utc)}


# -- checkpoints, folds, crashes -------------------------------------------------------------------


def test_rejected_rows_stay_out_of_the_snapshot_and_are_planned_again(warehouse):
    relation, job, store = new_sync(warehouse)
    summary = plan(store, job)
    ben = next(r for r in plan_rows(store, summary.table, UPSERT) if r[5] == "ben@example.com")
    assert ack_all(store, job, rejections=[(ben[0], "ben@example.com", "2007", "Invalid value")]) == (2, 0)
    assert set(snapshot(store, job.name)) == {"anna@example.com", "chloe@example.com"}
    rejected = store.wh.fetch(f"select sync_key, code, message from {store.rejected} "
                              f"where sync_name = {literal(job.name)}")
    assert rejected == [("ben@example.com", "2007", "Invalid value")]
    # Next run: the rejected row again, with the model's current values; once acknowledged, the
    # rejection record goes.
    warehouse.replace_rows(relation, COLUMNS, [ROWS[0], (ROWS[1][0], "Ben B", "20.00"), ROWS[2]])
    again = plan(store, job)
    assert [r[5] for r in plan_rows(store, again.table, UPSERT)] == ["ben@example.com"]
    ack_all(store, job)
    assert store.wh.fetch(f"select count(*) from {store.rejected} where sync_name = {literal(job.name)}") == [(0,)]


def test_an_interrupted_plan_keeps_exactly_its_acknowledged_ranges(warehouse):
    rows = [(f"p{i}@example.com", f"P{i}", "1.00") for i in range(25)]
    relation, job, store = new_sync(warehouse, rows=rows)
    summary = plan(store, job)
    lo, hi = summary.upsert_range
    # Batches of 5 acknowledged out of order, one rejected row among them; the rest never answered.
    store.checkpoint(job.name, job.run_id, [(lo + 10, lo + 14)], [])
    store.checkpoint(job.name, job.run_id, [(lo, lo + 4)], [(lo + 2, None, "2007", "bad")])
    acked = {r[5] for r in plan_rows(store, summary.table) if lo <= r[0] <= lo + 4 or lo + 10 <= r[0] <= lo + 14}
    rejected_key = next(r[5] for r in plan_rows(store, summary.table) if r[0] == lo + 2)
    # ... the process dies here: no fold. The next run recovers before diffing.
    recovered = store.recover(job.name)
    assert [(r.acknowledged, r.removed) for r in recovered] == [(9, 0)]
    assert set(snapshot(store, job.name)) == acked - {rejected_key}
    assert store.pending_plans(job.name) == []
    status = store.wh.fetch(f"select status from {store.runs} where run_id = {literal(recovered[0].run_id)}")
    assert status == [("interrupted",)]
    assert plan(store, job).new == 25 - 9


def test_a_fold_keeps_the_rows_of_touching_overlapping_and_nested_ranges_and_none_of_a_gap(warehouse):
    rows = [(f"r{i}@example.com", f"R{i}", "1.00") for i in range(30)]
    relation, job, store = new_sync(warehouse, rows=rows)
    summary = plan(store, job)
    lo, _ = summary.upsert_range
    ranges = [(lo + 10, lo + 14), (lo, lo + 4), (lo + 5, lo + 9),   # touching, out of order
              (lo + 12, lo + 17), (lo + 13, lo + 15),               # overlapping, nested
              (lo + 19, lo + 19), (lo + 21, lo + 24)]               # lo + 18 and lo + 20 never acknowledged
    store.checkpoint(job.name, job.run_id, ranges[:3], [])
    store.checkpoint(job.name, job.run_id, ranges[3:], [])
    expected = {r[5] for r in plan_rows(store, summary.table) if any(a <= r[0] <= b for a, b in ranges)}
    assert len(expected) == 18 + 1 + 4
    store.fold(job.name, job.run_id, summary.table, completed=False)
    assert set(snapshot(store, job.name)) == expected


def test_recover_with_nothing_pending_does_nothing(warehouse):
    _, job, store = new_sync(warehouse)
    assert store.recover(job.name) == []


# -- locks -----------------------------------------------------------------------------------------


def test_a_held_lock_makes_the_second_run_wait_then_fail_clearly(warehouse):
    _, job, store = new_sync(warehouse)
    store.acquire_lock(job.name, "run-1", timeout=0, stale_after=600)
    waits = []
    with pytest.raises(LockTimeout, match=rf"sync {job.name} is being run by run run-1 \(pid {os.getpid()}"):
        store.acquire_lock(job.name, "run-2", timeout=1.0, stale_after=600, sleep=waits.append)
    assert waits and sum(waits) >= 0.9
    store.release_lock(job.name, "run-1")
    store.acquire_lock(job.name, "run-2", timeout=0, stale_after=600)
    assert store.lock_holder(job.name).run_id == "run-2"


def test_a_lock_left_by_a_dead_process_is_taken_over(warehouse):
    _, job, store = new_sync(warehouse)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    store.wh.execute(
        f"insert into {store.locks} (sync_name, run_id, host, pid, acquired_at, heartbeat_at) values "
        f"({literal(job.name)}, 'crashed-run', {literal(store.host)}, {dead_pid}, "
        f"cast('2026-01-01 00:00:00' as timestamp), cast('2026-01-01 00:00:00' as timestamp))")
    store.acquire_lock(job.name, "new-run", timeout=0, stale_after=600)
    assert store.lock_holder(job.name).run_id == "new-run"


def test_a_lock_of_another_host_is_taken_over_only_when_its_heartbeat_is_stale(warehouse):
    _, job, store = new_sync(warehouse)
    store.wh.execute(
        f"insert into {store.locks} (sync_name, run_id, host, pid, acquired_at, heartbeat_at) values "
        f"({literal(job.name)}, 'other-host-run', 'another-host', 1, cast('2026-01-01 00:00:00' as timestamp), "
        f"cast('2026-01-01 00:00:00' as timestamp))")
    with pytest.raises(LockTimeout):
        store.acquire_lock(job.name, "mine", timeout=0, stale_after=10 ** 9)
    store.acquire_lock(job.name, "mine", timeout=0, stale_after=60)
    assert store.lock_holder(job.name).run_id == "mine"


# -- inspection and reset --------------------------------------------------------------------------


def test_describe_and_reset(warehouse):
    _, job, store = new_sync(warehouse)
    plan(store, job)
    summary_rows = plan_rows(store, job.plan.table, UPSERT)
    ack_all(store, job, rejections=[(summary_rows[0][0], summary_rows[0][5], "2008", "No contact found")])
    described = store.describe(job.name)
    assert described["snapshot_rows"] == 2 and described["rejected_by_code"] == {"2008": 1}
    assert described["rejected_samples"][0]["message"] == "No contact found"
    assert store.known_syncs() == [job.name]
    assert store.reset(job.name) == {"snapshot_rows": 2, "rejected_rows": 1}
    assert store.describe(job.name)["snapshot_rows"] == 0
    assert plan(store, job).new == 3


def test_a_checkpoint_is_all_or_nothing(warehouse):
    """A transaction that fails halfway leaves nothing behind (on Postgres too, where dbt's own
    connection handling would let each statement commit alone)."""
    _, job, store = new_sync(warehouse)
    plan(store, job)
    with pytest.raises(RuntimeError):
        with store.wh.transaction():
            store.wh.insert_values(store.progress, ("sync_name", "run_id", "seq_lo", "seq_hi"),
                                   [(job.name, job.run_id, 1, 3)])
            raise RuntimeError("the process dies between two statements")
    assert store.wh.fetch(f"select count(*) from {store.progress} where run_id = {literal(job.run_id)}") == [(0,)]
    store.checkpoint(job.name, job.run_id, [(1, 3)], [(2, "x@example.com", "2007", "bad")])
    assert store.wh.fetch(f"select count(*) from {store.progress} where run_id = {literal(job.run_id)}") == [(1,)]
