"""`dbt-emarsys-sync exposures`: one dbt exposure per sync, written into the project, parsed by dbt, and
`+exposure:` selecting exactly what the sync reads. `--check` fails CI when the file is out of date."""

from __future__ import annotations

import yaml

from tests.conftest import run_cli
from tests.dbt.helpers import load

ENABLED = {"table_contacts", "view_contacts", "incremental_contacts", "located_contacts", "sql_declared_list",
           "current_people", "versioned_contacts_v1", "versioned_contacts", "ephemeral_contacts",
           "unbuilt_contacts", "contracted_contacts", "mixed_case", "snapshot_people"}


def test_generated_exposures_parse_in_dbt_and_select_what_each_sync_reads(kinds):
    result = run_cli(["exposures"], cwd=kinds)
    assert result.returncode == 0, result.output
    path = kinds / "models" / "emarsys_exposures.yml"
    assert f"wrote {path}" in result.stdout
    document = yaml.safe_load(path.read_text())
    by_name = {e["name"]: e for e in document["exposures"]}
    # One per enabled sync; the disabled sync (enabled: false) has none.
    assert set(by_name) == {f"emarsys_{name}" for name in ENABLED}
    table = by_name["emarsys_table_contacts"]
    assert table["type"] == "application" and table["depends_on"] == ["ref('table_contacts')"]
    assert table["owner"] == {"name": "CRM team", "email": "crm@example.com"}     # from vars.emarsys.exposures
    assert table["config"]["meta"]["emarsys_sync"] == {"name": "table_contacts", "object": "contact",
                                                       "behaviour": "update_or_create"}
    assert by_name["emarsys_versioned_contacts_v1"]["depends_on"] == ["ref('contacts', v=1)"]
    assert by_name["emarsys_snapshot_people"]["depends_on"] == ["ref('people_snapshot')"]

    # dbt parses the file, and the exposures carry the lineage: `+exposure:` selects what each sync reads.
    project = load(kinds)
    assert project.manifest_origin == "dbt parse"
    assert {uid for uid in project.manifest.exposures} == {f"exposure.kinds.emarsys_{name}" for name in ENABLED}
    assert project.select(("+exposure:emarsys_table_contacts",)) == {"model.kinds.table_contacts",
                                                                     "seed.kinds.people"}
    assert project.select(("+exposure:emarsys_current_people",)) == {
        "model.kinds.current_people", "snapshot.kinds.people_snapshot", "seed.kinds.people"}
    assert project.select(("+exposure:emarsys_versioned_contacts_v1",)) == {"model.kinds.contacts.v1",
                                                                           "seed.kinds.people"}
    exposure = project.manifest.exposures["exposure.kinds.emarsys_table_contacts"]
    assert exposure.tags == ["emarsys"] and exposure.depends_on.nodes == ["model.kinds.table_contacts"]

    # Generating again changes nothing; --check agrees.
    again = run_cli(["exposures"], cwd=kinds)
    assert again.returncode == 0 and f"unchanged: {path}" in again.stdout
    check = run_cli(["exposures", "--check"], cwd=kinds)
    assert check.returncode == 0 and "is up to date" in check.stdout


def test_check_fails_when_a_declaration_changed_and_shows_the_difference(kinds):
    assert run_cli(["exposures"], cwd=kinds).returncode == 0
    yml = kinds / "models" / "special" / "_special.yml"
    yml.write_text(yml.read_text().replace("- name: mixed_case\n              key:",
                                           "- name: mixed_case_contacts\n              key:"))
    check = run_cli(["exposures", "--check"], cwd=kinds)
    assert check.returncode == 1, check.output
    assert "is not up to date: run `dbt-emarsys-sync exposures`" in check.stderr
    assert "-  - name: emarsys_mixed_case\n" in check.stderr
    assert "+  - name: emarsys_mixed_case_contacts\n" in check.stderr


def test_check_fails_when_the_file_is_missing(kinds):
    check = run_cli(["exposures", "--check"], cwd=kinds)
    assert check.returncode == 1 and "is not up to date" in check.stderr


def test_a_path_outside_the_model_paths_is_refused(kinds):
    result = run_cli(["exposures", "--path", "analyses/emarsys.yml"], cwd=kinds)
    assert result.returncode == 2
    assert "outside the project's model paths (models): dbt would not read the exposures" in result.stderr
