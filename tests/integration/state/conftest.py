"""One state/diff suite, two warehouses: every test here runs on DuckDB and on a real PostgreSQL server
the session starts (tests/postgres.py).

Each warehouse gets one small dbt project, built once per session with `dbt run` in a subprocess (so
target/manifest.json is current and loading it in-process runs no dbt command, which would reset the
adapters). Tests get their own model tables and their own state schema, so they don't see each other.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbt_emarsys_sync.dbt.project import DbtArgs, DbtProject
from dbt_emarsys_sync.dbt.source import DbtWarehouseSource
from dbt_emarsys_sync.dbt.state import StateStore
from dbt_emarsys_sync.dbt.warehouse import Warehouse
from dbt_emarsys_sync.engine import SyncJob, build_shape
from dbt_emarsys_sync.report import SyncReport
from dbt_emarsys_sync.spec import ModelRef, Sync, SyncSpec
from tests.conftest import run_dbt
from tests.postgres import postgres_server  # noqa: F401 - the session fixture

_counter = itertools.count()


def _write_project(root: Path, output: dict) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(yaml.safe_dump({
        "name": "state_suite", "version": "1.0.0", "config-version": 2, "profile": "state_suite",
        "model-paths": ["models"], "models": {"state_suite": {"+materialized": "table"}}}))
    (root / "profiles.yml").write_text(yaml.safe_dump({
        "state_suite": {"target": "test", "outputs": {"test": output}}}))
    # One model, so that `dbt run` writes a manifest and run_results of the same invocation.
    (root / "models" / "anchor.sql").write_text("select 1 as id\n")
    return root


@dataclass
class WarehouseUnderTest:
    kind: str
    project: DbtProject
    source: DbtWarehouseSource

    def connection(self):
        return self.source.connection("state-suite")

    @property
    def wh(self) -> Warehouse:
        return Warehouse(self.project.adapter())

    def store(self, schema: str | None = None) -> StateStore:
        return StateStore(self.wh, schema or f"state_{next(_counter)}_{os.getpid()}")

    def table(self, columns: dict[str, str], rows: list[tuple], name: str | None = None) -> str:
        """Create a model table with `columns` (name -> SQL type) holding `rows`; its relation name."""
        name = name or f"model_{next(_counter)}"
        relation = self.wh.relation(self.wh.target_schema, name)
        self.replace_rows(relation, columns, rows)
        return relation

    def replace_rows(self, relation: str, columns: dict[str, str], rows: list[tuple]) -> None:
        from dbt_emarsys_sync.dbt.warehouse import literal

        wh = self.wh
        cols = ", ".join(f"{wh.quote(c)} {t}" for c, t in columns.items())
        statements = [f"drop table if exists {relation}", f"create table {relation} ({cols})"]
        if rows:
            typed = ", ".join(
                "(" + ", ".join(f"cast({literal(v)} as {t})" for v, t in zip(row, columns.values())) + ")"
                for row in rows)
            statements.append(f"insert into {relation} values {typed}")
        wh.execute(*statements)
        # dbt's relation cache was filled before this table existed.
        self.project.adapter().cache.clear()

    def sync(self, relation: str, **spec: Any) -> Sync:
        base = {"name": f"s{next(_counter)}", "key": {"column": "email", "field": "email"}}
        base.update(spec)
        name = relation.rsplit(".", 1)[-1].strip('"')
        return Sync(SyncSpec.model_validate(base), ModelRef(f"model.state_suite.{name}", name, relation,
                                                             "models/_models.yml"))

    def job(self, sync: Sync) -> SyncJob:
        report = SyncReport(sync.name, sync.model.name, sync.spec.object, sync.spec.behaviour)
        report.start()
        return SyncJob(sync, build_shape(sync, self.source.columns(sync)), report)


@pytest.fixture(scope="session", params=["duckdb", "postgres"])
def warehouse_project(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"state_{request.param}") / "project"
    if request.param == "duckdb":
        output = {"type": "duckdb", "path": str(root / "warehouse.duckdb"), "threads": 4}
    else:
        server = request.getfixturevalue("postgres_server")
        database = server.create_database(f"state_suite_{os.getpid()}")
        output = server.profile(database)
    _write_project(root, output)
    run_dbt(["run"], cwd=root)
    project = DbtProject(DbtArgs(project_dir=str(root), profiles_dir=str(root))).load()
    return WarehouseUnderTest(request.param, project, DbtWarehouseSource(project))


@pytest.fixture
def warehouse(warehouse_project):
    """The warehouse, with this thread's connection open for the test."""
    with warehouse_project.connection():
        yield warehouse_project
