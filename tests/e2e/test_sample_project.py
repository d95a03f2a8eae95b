"""The README's main job, end to end: the sample dbt project built with dbt on DuckDB, the CLI run as a
user runs it, and the emulator (over HTTP) holding exactly the model's contacts afterwards."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import duckdb
import httpx
import pytest
import yaml

from tests.conftest import REPO, emulator_env, run_cli

pytestmark = pytest.mark.e2e

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def model_rows(project) -> list[dict]:
    con = duckdb.connect(str(project / "target" / "sample_shop.duckdb"), read_only=True)
    try:
        cur = con.execute("select * from main.emarsys_contacts")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def emulator_contacts(emu) -> list[dict]:
    return httpx.get(f"{emu.url}/_emulator/contacts").json()


def field_choices(emu, field_id: int) -> dict[int, str]:
    return {c.id: c.label for c in emu.emulator.store.fields[field_id].choices}


@pytest.mark.parametrize("scheme", ["oauth", "wsse"])
def test_run_syncs_every_valid_contact_with_its_values(sample_project, emulator, scheme):
    result = run_cli(["run"], cwd=sample_project, env=emulator_env(emulator, scheme))
    # Exit 1: the run succeeded but rejected rows (the sample's deliberately invalid emails).
    assert result.returncode == 1, result.output
    assert "Emarsys sync results" in result.stdout

    rows = model_rows(sample_project)
    valid = {r["email"].strip().lower(): r for r in rows if EMAIL.match(r["email"].strip().lower())}
    invalid = [r for r in rows if not EMAIL.match(r["email"].strip().lower())]
    assert len(rows) == 2500 and 0 < len(invalid) < 60

    contacts = emulator_contacts(emulator)
    by_email = {c["3"]: c for c in contacts}
    assert len(contacts) == len(valid)
    assert set(by_email) == set(valid)

    countries = field_choices(emulator, 14)
    tiers = field_choices(emulator, 5003)
    for email in sorted(valid)[::50]:  # every 50th contact, every mapped field
        row, contact = valid[email], by_email[email]
        assert contact.get("1") == row["first_name"]
        assert contact.get("2") == row["last_name"]
        assert contact.get("4") == (row["birth_date"].isoformat() if row["birth_date"] else None)
        assert countries[contact["14"]] == row["country"]
        assert contact["31"] == (1 if row["optin"] else 2)
        assert Decimal(contact["5001"]) == row["lifetime_value"]      # every digit kept
        assert tiers[contact["5003"]] == row["loyalty_tier"]

    artifact = json.loads((sample_project / "target" / "emarsys_sync_results.json").read_text())
    contacts_result = next(r for r in artifact["results"] if r["name"] == "shop_contacts")
    assert contacts_result["rejected"] == len(invalid)
    assert contacts_result["acknowledged"] == len(valid)
    # The VIP list's sync runs at the same time and upserts its audience too: between the two, every
    # contact was created once.
    vip_result = next(r for r in artifact["results"] if r["name"] == "vip_list")
    assert contacts_result["created"] + vip_result["created"] == len(valid)


def test_second_run_sends_nothing(sample_project, emulator):
    env = emulator_env(emulator)
    first = run_cli(["run"], cwd=sample_project, env=env)
    assert first.returncode == 1, first.output
    count_after_first = len(emulator_contacts(emulator))
    requests_after_first = len(httpx.get(f"{emulator.url}/_emulator/requests").json())
    second = run_cli(["run"], cwd=sample_project, env=env)
    # Still exit 1: the rejected rows are tried again on every run (and rejected again).
    assert second.returncode == 1, second.output
    assert len(emulator_contacts(emulator)) == count_after_first
    assert len(httpx.get(f"{emulator.url}/_emulator/requests").json()) == requests_after_first
    artifact = json.loads((sample_project / "target" / "emarsys_sync_results.json").read_text())
    for result in artifact["results"]:
        assert (result["sent"], result["api_requests"], result["created"]) == (0, 0, 0), result["name"]
    contacts_result = next(r for r in artifact["results"] if r["name"] == "shop_contacts")
    assert contacts_result["unchanged"] == count_after_first


def test_missing_credentials_is_a_one_line_config_error(sample_project):
    result = run_cli(["run"], cwd=sample_project, env={})
    assert result.returncode == 2
    assert "missing Emarsys credentials" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_model_in_selection_is_a_config_error(sample_project, emulator):
    result = run_cli(["run", "--select", "no_such_model"], cwd=sample_project, env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    assert "matches no model, snapshot or seed" in result.stderr


def test_model_not_built_names_the_dbt_command(sample_project, emulator):
    con = duckdb.connect(str(sample_project / "target" / "sample_shop.duckdb"))
    con.execute("drop table main.emarsys_contacts")
    con.close()
    result = run_cli(["run", "--select", "emarsys_contacts"], cwd=sample_project, env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    assert "dbt build --select emarsys_contacts" in result.stderr
    assert emulator_contacts(emulator) == []


@pytest.mark.parametrize("command", [["plan"], ["run"], ["validate", "--no-emarsys"], ["state", "show"]])
def test_a_warehouse_that_cannot_be_opened_is_a_one_line_config_error(sample_project, emulator, tmp_path,
                                                                       command):
    """The sample's DuckDB path is relative: run from elsewhere, the file isn't there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli([*command, "--project-dir", str(sample_project), "--profiles-dir", str(sample_project)],
                     cwd=elsewhere, env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output
    assert "profile 'sample_shop', target 'dev'" in result.stderr
    assert f"taken from the directory you run in, {elsewhere}" in result.stderr
    assert emulator_contacts(emulator) == []


def readme_yaml(start: str) -> dict:
    """The README's YAML example that starts with `start`."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return yaml.safe_load(next(b for b in blocks if b.startswith(start)))


def test_the_readmes_declaration_examples_validate(sample_project, emulator):
    """"Declaring a sync" and the project-wide defaults' vars, pasted into the sample project, pass
    validate against the emulator: every field they write exists and can be written."""
    marts = sample_project / "models" / "marts" / "_marts.yml"
    # The example declares vip_list on emarsys_contacts: it replaces the sample's declarations.
    models = readme_yaml("models:\n  - name: emarsys_contacts")["models"] + [{"name": "vip_customers"}]
    marts.write_text(yaml.safe_dump({"version": 2, "models": models}, sort_keys=False))
    project = sample_project / "dbt_project.yml"
    config = yaml.safe_load(project.read_text())
    config["vars"] = readme_yaml("# dbt_project.yml")["vars"]
    project.write_text(yaml.safe_dump(config, sort_keys=False))

    result = run_cli(["validate"], cwd=sample_project, env=emulator_env(emulator))
    assert result.returncode == 0, result.output
    assert "2 sync(s) OK (declarations, columns and Emarsys fields): shop_contacts, vip_list" in result.stdout
