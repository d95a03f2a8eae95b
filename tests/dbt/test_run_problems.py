"""run and plan report a declaration's column problems exactly as validate does: every problem at once,
each with its file:line, model, key path and the nearest column, before anything is planned or sent."""

from __future__ import annotations

import pytest

from tests.conftest import emulator_env, run_cli
from tests.dbt.helpers import line_of


@pytest.mark.parametrize("command", ["run", "plan", "validate"])
def test_run_and_plan_report_column_problems_as_validate_does(gating, emulator, command):
    yml = gating / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text()
                   .replace("fields: {first_name: first_name}", "fields: {frist_name: first_name, emial: last_name}")
                   .replace("fields: {tier: loyalty_tier}", "fields: {teir: loyalty_tier}"))
    # tested's test fails, so run skips it: its problem is validate's only.
    result = run_cli([command, "--select", "good", "warned"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    assert (f"  models/marts/_marts.yml:{line_of(yml, 'frist_name')}: model good: emarsys.syncs[0].fields.frist_name: "
            "column 'frist_name' is not in the model; did you mean 'first_name'? (columns: id, email, first_name)"
            ) in result.stderr
    assert (f"  models/marts/_marts.yml:{line_of(yml, 'frist_name')}: model good: emarsys.syncs[0].fields.emial: "
            "column 'emial' is not in the model; did you mean 'email'?") in result.stderr
    assert "2 problem(s)" in result.stderr
    assert emulator.emulator.store.contacts == {}
