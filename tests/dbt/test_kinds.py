"""Every kind of node a sync can read, on a real dbt project built on DuckDB (tests/fixtures/projects/kinds):
declarations found where dbt put them, with defaults and Jinja applied, and the built relation's columns
read through the project's own adapter."""

from __future__ import annotations

import duckdb
import pytest

from dbt_emarsys_sync.checks import check_syncs, model_columns
from dbt_emarsys_sync.errors import ConfigError
from dbt_emarsys_sync.spec import SpecError

from tests.conftest import emulator_env, run_cli
from tests.dbt.helpers import dbt, line_of, load

DECLARED = {
    "table_contacts", "table_contacts_update_only", "view_contacts", "incremental_contacts",
    "located_contacts", "sql_declared_list", "current_people", "versioned_contacts_v1", "versioned_contacts",
    "ephemeral_contacts", "unbuilt_contacts", "contracted_contacts", "mixed_case", "snapshot_people",
}


def by_name(syncs):
    return {s.name: s for s in syncs}


def test_every_declared_node_is_found_and_disabled_models_are_ignored(kinds):
    project = load(kinds)
    syncs = by_name(project.syncs())
    assert set(syncs) == DECLARED               # disabled_contacts declares a sync too, but is disabled
    assert syncs["snapshot_people"].model.resource_type == "snapshot"
    assert syncs["view_contacts"].model.materialized == "view"
    assert syncs["incremental_contacts"].model.materialized == "incremental"
    assert syncs["ephemeral_contacts"].model.relation_name is None


def test_custom_database_schema_alias_and_quoted_names_come_from_the_manifest(kinds):
    syncs = by_name(load(kinds).syncs())
    located = syncs["located_contacts"].model
    assert (located.database, located.schema, located.identifier) == ("crm", "main_marketing", "located_alias")
    mixed = syncs["mixed_case"].model
    assert mixed.identifier == "Mixed Case Contacts"
    assert mixed.relation_name == '"kinds"."main"."Mixed Case Contacts"'


def test_model_versions_are_separate_nodes_named_as_dbt_selects_them(kinds):
    syncs = by_name(load(kinds).syncs())
    v1, v2 = syncs["versioned_contacts_v1"].model, syncs["versioned_contacts"].model
    assert (v1.unique_id, v1.version, v1.display_name, v1.identifier) == \
        ("model.kinds.contacts.v1", "1", "contacts.v1", "contacts_v1")
    assert (v2.unique_id, v2.version, v2.identifier) == ("model.kinds.contacts.v2", "2", "contacts_v2")


@pytest.mark.parametrize("sync_name, expected", [
    ("table_contacts", {"id": "INTEGER", "email": "VARCHAR", "birth_date": "DATE", "is_vip": "BOOLEAN",
                        "score": "DECIMAL(12,2)", "signed_up_at": "TIMESTAMP"}),
    ("view_contacts", {"id": "INTEGER", "email": "VARCHAR", "first_name": "VARCHAR"}),
    ("incremental_contacts", {"email": "VARCHAR", "signed_up_at": "TIMESTAMP"}),
    ("located_contacts", {"email": "VARCHAR", "first_name": "VARCHAR"}),
    ("mixed_case", {"Email Address": "VARCHAR", "FirstName": "VARCHAR", "BirthDate": "DATE"}),
    ("versioned_contacts_v1", {"id": "INTEGER", "email": "VARCHAR"}),
    ("versioned_contacts", {"id": "INTEGER", "email": "VARCHAR", "first_name": "VARCHAR"}),
    ("current_people", {"email": "VARCHAR", "tier": "VARCHAR"}),
    ("snapshot_people", {"email": "VARCHAR", "dbt_valid_to": "TIMESTAMP"}),
    ("contracted_contacts", {"id": "INTEGER", "is_vip": "BOOLEAN"}),
])
def test_columns_of_every_built_kind_come_from_the_relation(kinds, sync_name, expected):
    project = load(kinds)
    sync = by_name(project.syncs())[sync_name]
    columns = {c.name: c.data_type for c in model_columns(project, sync)}
    for name, data_type in expected.items():
        assert columns[name] == data_type, columns


def test_an_ephemeral_model_is_a_clear_error(kinds):
    project = load(kinds)
    sync = by_name(project.syncs())["ephemeral_contacts"]
    with pytest.raises(ConfigError, match="model ephemeral_contacts is ephemeral: there is no relation to read"):
        model_columns(project, sync)


@pytest.mark.parametrize("command", ["run", "plan"])
def test_run_and_plan_call_an_ephemeral_model_a_configuration_error_not_unbuilt(kinds, emulator, command):
    """dbt never builds an ephemeral model: "build it first" could not help, so the build results don't
    decide; the configuration error does, before anything is sent."""
    result = run_cli([command, "--select", "ephemeral_contacts", "table_contacts"], cwd=kinds,
                     env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    assert "model ephemeral_contacts is ephemeral: there is no relation to read" in result.stderr
    assert "not built by the last dbt build" not in result.output
    assert emulator.emulator.store.contacts == {}


def test_a_model_that_was_never_built_names_the_build_command(kinds):
    project = load(kinds)
    sync = by_name(project.syncs())["unbuilt_contacts"]
    with pytest.raises(ConfigError) as info:
        model_columns(project, sync)
    assert str(info.value) == ('model unbuilt_contacts is not built: "kinds"."main"."unbuilt_contacts" does not '
                               "exist in the warehouse; run `dbt build --select unbuilt_contacts` first")


def test_a_versioned_model_that_was_never_built_names_its_version(kinds):
    con = duckdb.connect(str(kinds / "target" / "kinds.duckdb"))
    con.execute('drop table main.contacts_v1')
    con.close()
    project = load(kinds)
    with pytest.raises(ConfigError, match=r"run `dbt build --select contacts\.v1` first"):
        model_columns(project, by_name(project.syncs())["versioned_contacts_v1"])


def test_an_unbuilt_model_with_an_enforced_contract_is_still_checked_against_its_contract(kinds):
    yml = kinds / "models" / "contacts" / "_contacts.yml"
    yml.write_text(yml.read_text().replace("fields: {birth_date: birth_date, is_vip: optin}",
                                           "fields: {birth_dat: birth_date, is_vip: optin}"))
    con = duckdb.connect(str(kinds / "target" / "kinds.duckdb"))
    con.execute("drop table main.contracted_contacts")
    con.close()
    project = load(kinds)
    problems = check_syncs(project, [by_name(project.syncs())["contracted_contacts"]], None)
    messages = [(p.key, p.message) for p in problems]
    assert messages[0][0] == "emarsys.syncs[0]" and messages[0][1].startswith("the model is not built: ")
    assert messages[1] == ("emarsys.syncs[0].fields.birth_dat",
                           "column 'birth_dat' is not in the model; did you mean 'birth_date'? "
                           "(columns: id, email, birth_date, is_vip)")


def test_project_and_folder_defaults_are_merged_into_each_sync(kinds):
    syncs = by_name(load(kinds).syncs())
    # vars: {emarsys: {defaults: {safety: {max_removal_share: 0.1}}}} for every sync
    assert {s.spec.safety.max_removal_share for s in syncs.values()} == {0.1}
    # +meta: {emarsys_defaults: ...} on the `special` folder only
    assert syncs["mixed_case"].spec.timezone == "Europe/Berlin"
    assert syncs["mixed_case"].spec.null_policy == "clear"
    assert syncs["table_contacts"].spec.timezone == "UTC"
    assert syncs["table_contacts"].spec.null_policy == "skip"


def test_jinja_in_sql_config_is_rendered_by_the_tool_and_yaml_jinja_by_dbt(kinds, monkeypatch):
    monkeypatch.setenv("KINDS_LIST_LABEL", "Gold")
    monkeypatch.setenv("KINDS_NOTE", "set in the environment")
    # The environment changed: dbt re-renders the YAML (a new parse: partial parsing tracks env vars).
    (kinds / "models" / "contacts" / "table_contacts.sql").touch()
    project = load(kinds)
    syncs = by_name(project.syncs())
    assert project.manifest_origin == "dbt parse"
    # config(meta=...) in SQL: dbt leaves "{{ ... }}" inside the string alone; the tool renders it.
    assert syncs["sql_declared_list"].spec.list == "VIP 2026 Gold"
    # config.meta in YAML: dbt rendered env_var() at parse time.
    assert syncs["table_contacts"].spec.constants == {"notes": "set in the environment"}


def test_vars_on_the_command_line_reach_var_and_force_a_parse(kinds):
    project = load(kinds, vars={"list_suffix": "2027"})
    assert project.manifest_origin == "dbt parse"
    assert by_name(project.syncs())["sql_declared_list"].spec.list == "VIP 2027 default"


def test_the_build_manifest_is_reused_only_while_it_describes_this_run(kinds):
    assert load(kinds).manifest_origin.endswith("target/manifest.json")
    assert load(kinds, target="other").manifest_origin == "dbt parse"       # another target: other relations
    (kinds / "models" / "contacts" / "view_contacts.sql").touch()
    assert load(kinds).manifest_origin == "dbt parse"                        # a project file changed


def test_another_target_reads_that_targets_relations(kinds):
    project = load(kinds, target="other")
    located = by_name(project.syncs())["table_contacts"].model
    assert located.relation_name == '"kinds"."other"."table_contacts"'


def test_problems_point_at_the_yaml_line_of_the_key(kinds):
    yml = kinds / "models" / "contacts" / "_contacts.yml"
    yml.write_text(yml.read_text().replace("- name: view_contacts\n              key:",
                                           "- name: view_contacts\n              behavior: mirror\n              key:"))
    with pytest.raises(SpecError) as info:
        load(kinds).syncs()
    [problem] = info.value.problems
    assert problem.path == "models/contacts/_contacts.yml"
    assert problem.line == line_of(yml, "behavior: mirror")
    assert problem.key == "emarsys.syncs[0].behavior"
    assert str(problem).startswith(f"models/contacts/_contacts.yml:{problem.line}: model view_contacts: ")
    assert problem.message == "unknown key 'behavior'; did you mean 'behaviour'?"


def test_problems_in_dbt_project_yml_and_sql_point_there(kinds):
    project_yml = kinds / "dbt_project.yml"
    project_yml.write_text(project_yml.read_text().replace("timezone: Europe/Berlin", "timezone: Europe/Berln")
                           .replace("max_removal_share: 0.1", "max_removal_share: lots"))
    sql = kinds / "models" / "contacts" / "sql_declared.sql"
    sql.write_text(sql.read_text().replace("'behaviour': 'mirror'", "'behaviour': 'mirorr'"))
    with pytest.raises(SpecError) as info:
        load(kinds).syncs()
    found = {(p.path, p.line, p.key): p.message for p in info.value.problems}
    assert found[("dbt_project.yml", line_of(project_yml, "timezone: Europe/Berln"), "emarsys_defaults.timezone")] \
        == "unknown time zone 'Europe/Berln'; did you mean 'Europe/Berlin'?"
    assert found[("dbt_project.yml", line_of(project_yml, "max_removal_share: lots"),
                  "vars.emarsys.defaults.safety.max_removal_share")] == \
        "safety.max_removal_share must be a number, got 'lots'"
    assert found[("models/contacts/sql_declared.sql", line_of(sql, "'emarsys'"), "emarsys.syncs[0].behaviour")] \
        .endswith("did you mean 'mirror'?")
    # A default set once for many models is one problem, not one per model.
    assert len(info.value.problems) == 3


def test_a_model_level_declaration_on_a_versioned_model_explains_the_name_clash(kinds):
    yml = kinds / "models" / "contacts" / "_contacts.yml"
    yml.write_text(yml.read_text().replace(
        "  - name: contacts\n    latest_version: 2\n",
        "  - name: contacts\n    latest_version: 2\n    config:\n      meta:\n        emarsys:\n          syncs:\n"
        "            - name: all_versions\n              key: {column: email}\n"))
    with pytest.raises(SpecError) as info:
        load(kinds).syncs()
    [problem] = info.value.problems
    assert "the sync name 'all_versions' is also used by model contacts.v1" in problem.message
    assert "declare the sync under the version that should sync" in problem.message


def test_incremental_model_after_a_second_build_keeps_its_relation(kinds):
    dbt(["build", "--select", "incremental_contacts"], kinds)
    project = load(kinds)
    columns = model_columns(project, by_name(project.syncs())["incremental_contacts"])
    assert [c.name for c in columns] == ["id", "email", "first_name", "signed_up_at"]
