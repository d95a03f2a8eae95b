"""The delivery ledger in the state schema, through the dbt adapter, on DuckDB and on PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from dbt_emarsys_sync.cloud.ledger import WarehouseDeliveryLedger
from dbt_emarsys_sync.cloud.worker import Delivery, Outcome
from dbt_emarsys_sync.dbt.project import DbtArgs
from tests.postgres import postgres_server  # noqa: F401  (the session fixture)


def write_project(root: Path, output: dict) -> DbtArgs:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(yaml.safe_dump(
        {"name": "ledger_check", "version": "1.0.0", "config-version": 2, "profile": "ledger_check"}))
    (root / "profiles.yml").write_text(yaml.safe_dump(
        {"ledger_check": {"target": "prod", "outputs": {"prod": output}}}))
    return DbtArgs(project_dir=str(root), profiles_dir=str(root))


@pytest.fixture
def duckdb_args(tmp_path) -> DbtArgs:
    return write_project(tmp_path / "duck", {"type": "duckdb", "path": str(tmp_path / "warehouse.duckdb"),
                                             "schema": "analytics", "threads": 1})


@pytest.fixture
def postgres_args(tmp_path, postgres_server) -> DbtArgs:  # noqa: F811
    database = postgres_server.create_database(f"ledger_{uuid.uuid4().hex[:8]}")
    return write_project(tmp_path / "pg", postgres_server.profile(database, schema="analytics", threads=1))


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_args(request) -> DbtArgs:
    from dbt.adapters.factory import reset_adapters

    reset_adapters()   # one adapter per type per process; each test has its own warehouse
    yield request.getfixturevalue(f"{request.param}_args")
    reset_adapters()


def test_a_run_id_is_claimed_once_and_its_history_kept(ledger_args):
    ledger = WarehouseDeliveryLedger(ledger_args)
    ledger.open()
    ledger.open()     # idempotent: a restart opens it again
    assert ledger.table.replace('"', "").endswith("analytics_emarsys_sync.dbt_cloud_deliveries")

    delivery = Delivery(run_id=70403103, job_id=7, environment_id=70, event_id="wev_1")
    assert ledger.claim(delivery) is True
    assert ledger.claim(delivery) is False
    assert ledger.started(70403103) == 1
    message = "Emarsys said: it's \"broken\" \\ here"
    ledger.finished(70403103, Outcome("rejected_rows", message))

    [row] = ledger.rows()
    assert (row["run_id"], row["job_id"], row["environment_id"]) == (70403103, 7, 70)
    assert row["event_id"] == "wev_1"
    assert (row["status"], row["attempts"], row["message"]) == ("rejected_rows", 1, message)
    assert row["received_at"] is not None and row["finished_at"] is not None
    assert ledger.unfinished() == []


def test_queued_and_interrupted_runs_are_found_by_the_next_process(ledger_args):
    first = WarehouseDeliveryLedger(ledger_args)
    first.open()
    for run_id in (1, 2, 3):
        first.claim(Delivery(run_id=run_id, job_id=7))
    first.started(1)                       # interrupted while syncing
    first.started(2)
    first.finished(2, Outcome("success"))  # done
    # run 3: queued, never started

    second = WarehouseDeliveryLedger(ledger_args)
    second.open()
    unfinished = {d.run_id: d for d in second.unfinished()}
    assert set(unfinished) == {1, 3}
    assert unfinished[1].attempts == 1 and unfinished[3].attempts == 0
    assert all(d.resumed and d.job_id == 7 for d in unfinished.values())
    assert second.started(1) == 2


def test_the_state_schema_follows_the_runners_setting(ledger_args, monkeypatch):
    monkeypatch.setenv("EMARSYS_SYNC_STATE_SCHEMA", "sync_state")
    ledger = WarehouseDeliveryLedger(ledger_args)
    ledger.open()
    assert ".sync_state." in ledger.table.replace('"', "")
    explicit = WarehouseDeliveryLedger(ledger_args, schema="other_state")
    explicit.open()
    assert ".other_state." in explicit.table.replace('"', "")
