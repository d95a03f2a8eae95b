"""Two mappings writing one Emarsys field (after resolving names, string ids and ids to field ids) are a
configuration problem, reported by validate and by run before anything is sent: never one value
silently overwriting the other."""

from __future__ import annotations

import json

from tests.conftest import emulator_env, run_cli
from tests.dbt.helpers import line_of


def _collide(project):
    yml = project / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text().replace(
        "              fields: {first_name: first_name}\n",
        "              fields:\n"
        "                first_name: First Name\n"
        "                id: first_name\n"
        "              constants:\n"
        "                1: Ada\n"
        "                3: someone@example.com\n", 1))
    return yml


def test_validate_reports_every_mapping_that_writes_a_field_already_written(gating, emulator):
    yml = _collide(gating)
    result = run_cli(["validate", "--select", "good", "--output", "json"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    found = {p["key"]: p for p in json.loads(result.stdout)["problems"]}
    assert set(found) == {"emarsys.syncs[0].fields.id", "emarsys.syncs[0].constants.1",
                          "emarsys.syncs[0].constants.3"}
    assert found["emarsys.syncs[0].fields.id"]["message"] == (
        "column 'id' and column 'first_name' (fields.first_name) both write the Emarsys field 'First Name' "
        "(id 1, shorttext): one value would overwrite the other; map the field once")
    assert found["emarsys.syncs[0].fields.id"]["line"] == line_of(yml, "id: first_name")
    assert found["emarsys.syncs[0].constants.1"]["message"].startswith(
        "constant 1 and column 'first_name' (fields.first_name) both write the Emarsys field 'First Name'")
    assert found["emarsys.syncs[0].constants.3"]["message"].startswith(
        "constant 3 and the key column 'email' (key.field) both write the Emarsys field 'E-Mail' (id 3")


def test_validate_without_emarsys_recognises_identical_references(gating):
    yml = gating / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text().replace("fields: {tier: loyalty_tier}",
                                           "fields: {tier: loyalty_tier}\n              constants: {loyalty_tier: Gold}"))
    result = run_cli(["validate", "--no-emarsys", "--select", "tested"], cwd=gating)
    assert result.returncode == 2, result.output
    assert "model tested: emarsys.syncs[0].constants.loyalty_tier: constant loyalty_tier and column 'tier' " \
           "(fields.tier) both write the Emarsys field 'loyalty_tier'" in result.stderr


def test_run_refuses_colliding_mappings_before_sending_anything(gating, emulator):
    _collide(gating)
    result = run_cli(["run", "--select", "good"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    assert "model good: emarsys.syncs[0].fields.id: column 'id' and column 'first_name' (fields.first_name) " \
           "both write the Emarsys field 'First Name'" in result.stderr
    assert emulator.emulator.store.contacts == {}      # nothing was sent
