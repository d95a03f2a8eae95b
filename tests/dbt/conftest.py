"""Fixture dbt projects (tests/fixtures/projects) copied and built with dbt on DuckDB, once per session,
and a private copy per test (DuckDB file and artifacts included) for tests that change them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.dbt.helpers import FIXTURES, copy_project, dbt

HERE = Path(__file__).parent

def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.dbt)


@pytest.fixture(scope="session")
def kinds_built(tmp_path_factory) -> Path:
    """`kinds` built, except `unbuilt_contacts` (the model that was never built)."""
    project = copy_project(FIXTURES / "kinds", tmp_path_factory.mktemp("kinds") / "kinds")
    dbt(["build", "--exclude", "unbuilt_contacts"], project)
    return project


@pytest.fixture(scope="session")
def gating_built(tmp_path_factory) -> Path:
    """`gating` built: broken fails, after_broken is skipped, tested's test fails, warned's test warns."""
    project = copy_project(FIXTURES / "gating", tmp_path_factory.mktemp("gating") / "gating")
    dbt(["build"], project, ok=False)
    return project


@pytest.fixture
def kinds(kinds_built, tmp_path, monkeypatch) -> Path:
    """A private copy of the built `kinds` project; the process works in it (relative DuckDB paths)."""
    project = copy_project(kinds_built, tmp_path / "kinds")
    _enter(project, monkeypatch)
    return project


@pytest.fixture
def gating(gating_built, tmp_path, monkeypatch) -> Path:
    project = copy_project(gating_built, tmp_path / "gating")
    _enter(project, monkeypatch)
    return project


def _enter(project: Path, monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DBT_", "EMARSYS_", "KINDS_", "GATING_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(project)
    # Absolute DuckDB paths: dbt-duckdb keeps one open database per process while the profile's
    # credentials stay the same, so a relative path would keep reading an earlier test's copy.
    target = project / "target"
    monkeypatch.setenv("KINDS_DUCKDB_PATH", str(target / "kinds.duckdb"))
    monkeypatch.setenv("KINDS_CRM_DUCKDB_PATH", str(target / "crm.duckdb"))
    monkeypatch.setenv("GATING_DUCKDB_PATH", str(target / "gating.duckdb"))

