"""Selection is dbt's own selector engine, in-process on the project's manifest: every method dbt users
type works, and the commands take dbt's flags (`--select a b`, --selector, --state, DBT_* variables)."""

from __future__ import annotations

import json
import shutil

import pytest

from dbt_emarsys_sync.errors import ConfigError
from tests.conftest import run_cli
from tests.dbt.helpers import line_of, load

SYNCING = {"model.gating.good", "model.gating.broken", "model.gating.after_broken", "model.gating.tested",
           "model.gating.warned", "model.gating.stg_people"}


@pytest.mark.parametrize("select, exclude, expected", [
    (("tag:marts",), (), {"good", "broken", "after_broken", "tested", "warned"}),
    (("path:models/staging",), (), {"stg_people"}),
    (("+good",), (), {"good", "stg_people", "people"}),
    (("stg_people+",), ("broken+",), {"stg_people", "good", "tested", "warned"}),
    (("config.meta.emarsys_team:crm",), (), {"broken", "good"}),
    (("tag:marts,config.meta.emarsys_team:crm",), (), {"broken", "good"}),      # intersection
    (("good", "tested"), (), {"good", "tested"}),                              # union
])
def test_dbt_selection_methods(gating, select, exclude, expected):
    selected = load(gating).select(select, exclude)
    assert {uid.split(".")[-1] for uid in selected} == expected


def test_a_selector_of_selectors_yml(gating):
    assert load(gating).select(selector="crm_marts") == {"model.gating.broken", "model.gating.good"}


def test_a_default_selector_applies_when_nothing_is_selected(gating):
    (gating / "selectors.yml").write_text((gating / "selectors.yml").read_text().replace(
        "  - name: crm_marts\n", "  - name: crm_marts\n    default: true\n"))
    project = load(gating)
    assert project.select() == {"model.gating.broken", "model.gating.good"}
    assert project.select(("tested",)) == {"model.gating.tested"}       # an explicit selection wins, as in dbt


def test_nothing_selected_means_no_narrowing(gating):
    assert load(gating).select() is None


def test_result_selection_reads_the_state_directory(gating, tmp_path):
    state = tmp_path / "last_build"
    shutil.copytree(gating / "target", state)
    project = load(gating)
    success = project.select(("result:success",), (), state=str(state))
    assert {uid for uid in success if uid in SYNCING} == {"model.gating.good", "model.gating.tested",
                                                           "model.gating.warned", "model.gating.stg_people"}
    assert project.select(("result:error",), (), state=str(state)) == {"model.gating.broken"}
    assert project.select(("result:skipped",), (), state=str(state)) == {"model.gating.after_broken"}


def test_state_modified_selects_what_changed_since_production(gating, tmp_path):
    production = tmp_path / "prod_artifacts"
    shutil.copytree(gating / "target", production)
    sql = gating / "models" / "marts" / "tested.sql"
    sql.write_text(sql.read_text() + "\n-- changed\n")
    project = load(gating, state=str(production))
    assert project.select(("state:modified+",), ()) == {"model.gating.tested"}


def test_a_state_selector_without_state_is_dbts_error(gating):
    with pytest.raises(ConfigError, match="dbt could not apply the selection"):
        load(gating).select(("state:modified",), ())


def test_an_unknown_selector_is_dbts_error(gating):
    with pytest.raises(ConfigError, match="dbt could not apply the selection: .*nope"):
        load(gating).select(selector="nope")


# -- the command line, as a user types it -------------------------------------------------------------


def ls(project, *args, env=None, cwd=None):
    result = run_cli(["ls", "--output", "json", *args], cwd=cwd or project, env=env)
    assert result.returncode == 0, result.output
    return {row["name"] for row in json.loads(result.stdout)}


def test_select_takes_several_words_like_dbt(gating):
    assert ls(gating, "--select", "good", "tested", "warned", "--exclude", "tested", "warned") == {"good_sync"}
    assert ls(gating, "-s", "good", "-s", "tested") == {"good_sync", "tested_sync"}


def test_selector_state_and_dbt_environment_variables(gating, tmp_path):
    state = tmp_path / "state"
    shutil.copytree(gating / "target", state)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"DBT_PROJECT_DIR": str(gating), "DBT_PROFILES_DIR": str(gating), "DBT_TARGET": "dev",
           "GATING_DUCKDB_PATH": str(gating / "target" / "gating.duckdb")}
    assert ls(gating, "--selector", "crm_marts", env=env, cwd=elsewhere) == {"good_sync", "broken_sync"}
    assert ls(gating, "--select", "result:error", env={**env, "DBT_STATE": str(state)}, cwd=elsewhere) == \
        {"broken_sync"}


def test_ls_text_lists_every_sync_with_where_it_is_declared(gating):
    result = run_cli(["list"], cwd=gating)
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["sync", "model", "object", "behaviour", "key", "list", "enabled", "declared", "in"]
    good = next(line for line in lines if line.startswith("good_sync"))
    yml = gating / "models" / "marts" / "_marts.yml"
    assert f"models/marts/_marts.yml:{line_of(yml, 'name: good_sync')}" in good and "email -> email" in good


def test_a_selection_matching_no_declaration_is_an_error(gating):
    result = run_cli(["ls", "--select", "people"], cwd=gating)
    assert result.returncode == 2
    assert "the selection (--select people) matches 1 model(s), none of which declares a sync" in result.stderr
    assert "--exclude" not in result.stderr


def test_dbt_usage_tracking_stays_off_in_process(gating, monkeypatch):
    """The runner's in-process dbt commands never start dbt's anonymous usage tracking (a call to dbt
    Labs' collector), even in a project that doesn't turn it off and without DO_NOT_TRACK."""
    import dbt.tracking

    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    yml = gating / "dbt_project.yml"
    yml.write_text(yml.read_text().replace("send_anonymous_usage_stats: false", "send_anonymous_usage_stats: true"))
    project = load(gating)
    assert project.select(("tag:marts",))
    assert dbt.tracking.active_user is not None and dbt.tracking.active_user.do_not_track
