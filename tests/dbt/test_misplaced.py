"""A declaration dbt keeps out of meta (`config: {emarsys: ...}` in YAML, `config(emarsys=...)` in SQL) is
not silently ignored: ls and run warn, validate reports it as a problem, each with file:line. A top-level
`meta:` is merged into `config.meta` by dbt, so it simply works."""

from __future__ import annotations

import json

from tests.conftest import emulator_env, run_cli
from tests.dbt.helpers import line_of

MESSAGE = "model {model} declares `config.emarsys`; move it under `config.meta.emarsys`"


def _misplace(project):
    yml = project / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text().replace("""  - name: warned
    config:
      meta:
        emarsys:
          syncs:
            - name: warned_sync""", """  - name: warned
    config:
        emarsys:
          syncs:
            - name: warned_sync"""))
    sql = project / "models" / "marts" / "tested.sql"
    sql.write_text("{{ config(emarsys={'syncs': [{'name': 'inline', 'key': {'column': 'email'}}]}) }}\n"
                   + sql.read_text())
    return yml, sql


def test_validate_reports_a_declaration_straight_under_config(gating):
    yml, sql = _misplace(gating)
    result = run_cli(["validate", "--no-emarsys", "--output", "json"], cwd=gating)
    assert result.returncode == 2, result.output
    found = {(p["model"], p["path"], p["line"], p["key"]): p["message"] for p in json.loads(result.stdout)["problems"]}
    key = ("warned", "models/marts/_marts.yml", line_of(yml, "emarsys:", line_of(yml, "- name: warned")), "config.emarsys")
    assert found[key].startswith(MESSAGE.format(model="warned"))
    assert found[("tested", "models/marts/tested.sql", 1, "config.emarsys")].startswith(MESSAGE.format(model="tested"))


def test_ls_and_run_warn_of_it(gating, emulator):
    yml, _ = _misplace(gating)
    line = line_of(yml, "emarsys:", line_of(yml, "- name: warned"))
    result = run_cli(["ls"], cwd=gating)
    assert result.returncode == 0, result.output
    # A line of its own, worded as the command's other messages (no timestamp or logger name).
    assert f"\nwarning: models/marts/_marts.yml:{line}: model warned: config.emarsys: " \
        + MESSAGE.format(model="warned") in "\n" + result.stderr
    assert "models/marts/tested.sql:1: model tested: config.emarsys: " in result.stderr
    result = run_cli(["run", "--select", "good", "warned"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode == 0, result.output
    assert f"models/marts/_marts.yml:{line}: model warned: config.emarsys: " + MESSAGE.format(model="warned") \
        in result.stderr
    # Only a misplaced declaration in the selection: said so, not "no model declares config.meta.emarsys".
    result = run_cli(["ls", "--select", "warned"], cwd=gating)
    assert result.returncode == 2
    assert MESSAGE.format(model="warned") in result.stderr


def test_a_top_level_meta_is_merged_by_dbt_and_syncs(gating):
    yml = gating / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text().replace("""  - name: warned
    config:
      meta:
        emarsys:""", """  - name: warned
    meta:
        emarsys:"""))
    result = run_cli(["ls", "--select", "warned", "--output", "json"], cwd=gating)
    assert result.returncode == 0, result.output
    assert [row["name"] for row in json.loads(result.stdout)] == ["warned_sync"]
    assert "config.emarsys" not in result.stderr
