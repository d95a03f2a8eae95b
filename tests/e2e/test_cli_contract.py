"""What the command line promises a user, on the sample dbt project against the bundled emulator: the
exit code `plan` gives is the one `run` would give, skipped syncs don't pass for success, unknown names
are errors that say what exists, a plan never overwrites a run's results, and settings that would send
requests (or a secret) to the wrong place are refused before anything is sent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, emulator_env, run_cli, run_dbt

pytestmark = pytest.mark.e2e

MARTS_YML = Path("models") / "marts" / "_marts.yml"


def results(project: Path, name: str = "emarsys_sync_results.json") -> dict[str, dict]:
    artifact = json.loads((project / "target" / name).read_text())
    return {r["name"]: r for r in artifact["results"]}


def emarsys_writes(emu) -> list[dict]:
    return [r for r in httpx.get(f"{emu.url}/_emulator/requests").json()
            if r["method"] in ("PUT", "POST", "DELETE") and "/oauth2/" not in r["path"]]


# -- plan gives run's exit code ------------------------------------------------------------------------


def test_plan_exits_2_like_run_for_a_field_emarsys_does_not_have(sample_project, emulator):
    yml = sample_project / MARTS_YML
    yml.write_text(yml.read_text().replace("last_name: last_name", "last_name: no_such_field"))
    env = emulator_env(emulator)

    ran = run_cli(["run", "--select", "emarsys_contacts"], cwd=sample_project, env=env)
    assert ran.returncode == 2, ran.output
    # Placed as validate places it: the file, the line of the key, the key path.
    line = next(i for i, text in enumerate(yml.read_text().splitlines(), 1) if "no_such_field" in text)
    assert f"{MARTS_YML}:{line}: model emarsys_contacts: emarsys.syncs[0].fields.last_name: no Emarsys field " \
        "named 'no_such_field'" in ran.stderr, ran.stderr

    planned = run_cli(["plan", "--select", "emarsys_contacts"], cwd=sample_project, env=env)
    assert planned.returncode == 2, planned.output
    assert "no_such_field" in planned.stderr and "Traceback" not in planned.output
    assert emarsys_writes(emulator) == []


# -- skipped syncs are not a success ----------------------------------------------------------------


def test_a_sync_skipped_because_of_the_last_build_exits_4(sample_project, emulator):
    # The last build left emarsys_contacts out: its sync is skipped, the list's sync runs.
    run_dbt(["build", "--select", "vip_customers"], cwd=sample_project)
    env = emulator_env(emulator)

    only_skipped = run_cli(["run", "--select", "emarsys_contacts"], cwd=sample_project, env=env)
    assert only_skipped.returncode == 4, only_skipped.output
    report = results(sample_project)
    assert report["shop_contacts"]["status"] == "skipped"
    assert "dbt build --select emarsys_contacts" in report["shop_contacts"]["message"]

    both = run_cli(["run"], cwd=sample_project, env=env)
    assert both.returncode == 4, both.output                # skipped outranks rejected rows (1)
    report = results(sample_project)
    assert report["shop_contacts"]["status"] == "skipped" and report["vip_list"]["status"] != "skipped"
    assert report["vip_list"]["added"] > 0                  # the others ran
    artifact = json.loads((sample_project / "target" / "emarsys_sync_results.json").read_text())
    assert artifact["exit_code"] == 4

    planned = run_cli(["plan", "--select", "emarsys_contacts"], cwd=sample_project, env=env)
    assert planned.returncode == 4, planned.output          # the code run would give


# -- a selection that selects no sync says why ---------------------------------------------------------


def test_a_selection_of_nothing_and_a_selection_without_declarations_are_told_apart(sample_project, emulator):
    env = emulator_env(emulator)
    nothing = run_cli(["run", "--select", "nope_model"], cwd=sample_project, env=env)
    assert nothing.returncode == 2, nothing.output
    assert "the selection (--select nope_model) matches no model, snapshot or seed" in nothing.stderr
    assert "--exclude" not in nothing.stderr

    undeclared = run_cli(["run", "--select", "stg_customers"], cwd=sample_project, env=env)
    assert undeclared.returncode == 2, undeclared.output
    assert "matches 1 model(s), none of which declares a sync in config.meta.emarsys: stg_customers" \
        in undeclared.stderr

    misspelt = run_cli(["plan", "--select", "emarsys_contact"], cwd=sample_project, env=env)
    assert misspelt.returncode == 2 and "did you mean 'emarsys_contacts'?" in misspelt.stderr, misspelt.output

    excluded = run_cli(["run", "--select", "tag:emarsys", "--exclude", "tag:emarsys"], cwd=sample_project,
                       env=env)
    assert excluded.returncode == 2
    assert "the selection (--select tag:emarsys --exclude tag:emarsys) matches no model" in excluded.stderr
    assert emarsys_writes(emulator) == []


# -- state commands on names that don't exist -----------------------------------------------------------


def test_state_commands_refuse_an_unknown_sync_and_name_the_known_ones(sample_project, emulator):
    env = emulator_env(emulator)
    assert run_cli(["run", "--select", "vip_customers"], cwd=sample_project, env=env).returncode in (0, 1)

    shown = run_cli(["state", "show", "--sync", "shop_contact"], cwd=sample_project, env=env)
    assert shown.returncode == 2, shown.output
    assert "unknown sync 'shop_contact' (did you mean 'shop_contacts'?)" in shown.stderr
    assert "shop_contacts, vip_list" in shown.stderr

    reset = run_cli(["state", "reset", "--sync", "nope", "--yes"], cwd=sample_project, env=env)
    assert reset.returncode == 2, reset.output
    assert "unknown sync 'nope'" in reset.stderr and "forgot" not in reset.stdout

    # Known names still work, declared or not yet run.
    assert run_cli(["state", "show", "--sync", "shop_contacts"], cwd=sample_project, env=env).returncode == 0


def test_state_reset_asks_with_the_names_of_the_syncs_it_would_reset(sample_project, emulator):
    env = emulator_env(emulator)
    assert run_cli(["run"], cwd=sample_project, env=env).returncode == 1
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
    declined = subprocess.run([str(BIN / "dbt-emarsys-sync"), "state", "reset", "--select", "tag:emarsys"],
                              cwd=sample_project, env={**full_env, **env}, input="n\n", capture_output=True,
                              text=True, timeout=300, check=False)
    assert "Reset the state of 2 sync(s): shop_contacts, vip_list?" in declined.stdout, declined.stderr
    assert declined.returncode != 0 and "forgot" not in declined.stdout
    shown = json.loads(run_cli(["state", "show", "--output", "json"], cwd=sample_project, env=env).stdout)
    assert all(s["snapshot_rows"] > 0 for s in shown["syncs"])     # nothing was forgotten


def test_state_commands_refuse_sync_with_a_dbt_selection(sample_project, emulator):
    """--sync names the syncs; a dbt selection beside it would be silently ignored (and reset a sync
    the selection leaves out)."""
    env = emulator_env(emulator)
    assert run_cli(["run"], cwd=sample_project, env=env).returncode == 1
    for args in (["reset", "--sync", "vip_list", "--select", "emarsys_contacts", "--yes"],
                 ["reset", "--sync", "vip_list", "--exclude", "vip_customers", "--yes"],
                 ["show", "--sync", "vip_list", "--select", "emarsys_contacts"]):
        result = run_cli(["state", *args], cwd=sample_project, env=env)
        assert result.returncode == 2, result.output
        assert f"--sync can't be combined with {args[3]}" in result.stderr and "forgot" not in result.stdout
    shown = json.loads(run_cli(["state", "show", "--output", "json"], cwd=sample_project, env=env).stdout)
    assert all(s["snapshot_rows"] > 0 for s in shown["syncs"])     # nothing was forgotten


# -- bad --vars ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["{bad", "[1, 2]"])
def test_bad_vars_are_a_configuration_error_in_every_command_that_takes_them(tmp_path, value):
    # serve reads its settings first: give it some (nothing is reached, --vars stops it before).
    env = {"DBT_CLOUD_WEBHOOK_SECRET": "s", "DBT_CLOUD_ACCOUNT_ID": "1", "DBT_CLOUD_API_TOKEN": "t",
           "DBT_CLOUD_URL": "http://127.0.0.1:9", "EMARSYS_API_URL": "http://127.0.0.1:9",
           "EMARSYS_AUTH_URL": "http://127.0.0.1:9/oauth2/token", "EMARSYS_CLIENT_ID": "a",
           "EMARSYS_CLIENT_SECRET": "b"}
    for command in (["run"], ["plan"], ["validate"], ["ls"], ["list"], ["exposures"], ["state", "show"],
                    ["state", "reset", "--sync", "shop_contacts", "--yes"], ["serve"]):
        result = run_cli([*command, "--vars", value], cwd=tmp_path, env=env, timeout=60)
        assert result.returncode == 2, (command, result.output)
        assert result.stderr.startswith("error: --vars "), (command, result.stderr)
        assert "Traceback" not in result.output


# -- a plan keeps the last run's results ----------------------------------------------------------------


def test_a_plan_writes_its_own_file_and_keeps_the_last_runs_results(sample_project, emulator):
    env = emulator_env(emulator)
    assert run_cli(["run"], cwd=sample_project, env=env).returncode == 1
    ran = (sample_project / "target" / "emarsys_sync_results.json").read_text()

    planned = run_cli(["plan"], cwd=sample_project, env=env)
    assert planned.returncode == 1, planned.output
    assert (sample_project / "target" / "emarsys_sync_results.json").read_text() == ran
    plan = json.loads((sample_project / "target" / "emarsys_sync_plan.json").read_text())
    assert plan["metadata"]["dry_run"] is True
    assert {r["status"] for r in plan["results"]} == {"planned"}
    assert json.loads(ran)["metadata"]["dry_run"] is False


# -- --samples is honoured wherever examples are shown --------------------------------------------------


def examples_after(output: str, heading: str) -> list[str]:
    """The `  - ` lines that follow the line containing `heading`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if heading in line) + 1
    examples = []
    for line in lines[start:]:
        if not line.startswith("  - "):
            break
        examples.append(line)
    return examples


def test_samples_limits_every_list_of_examples(sample_project, emulator):
    env = emulator_env(emulator)
    text = run_cli(["plan", "--select", "emarsys_contacts", "--samples", "2"], cwd=sample_project, env=env)
    assert text.returncode == 1, text.output
    assert len(examples_after(text.stdout, "rows would be rejected")) == 2, text.stdout

    as_json = run_cli(["plan", "--select", "emarsys_contacts", "--samples", "2", "--output", "json"],
                      cwd=sample_project, env=env)
    shop = json.loads(as_json.stdout)["results"][0]
    assert shop["rejected"] > 2 and len(shop["rejected_samples"]) == 2
    assert all(len(rows) <= 2 for rows in shop["samples"].values())

    ran = run_cli(["run", "--select", "emarsys_contacts", "--samples", "1"], cwd=sample_project, env=env)
    assert ran.returncode == 1, ran.output
    assert len(examples_after(ran.stdout, "rows rejected")) == 1, ran.stdout
    assert len(results(sample_project)["shop_contacts"]["rejected_samples"]) > 1   # the file keeps up to 20


# -- settings that would send requests, or the secret, to the wrong place --------------------------------


def test_an_api_url_with_the_version_is_refused_naming_the_base_url(sample_project, emulator):
    env = {**emulator_env(emulator), "EMARSYS_API_URL": f"{emulator.url}/api/v3"}
    for command in (["run"], ["plan"], ["validate"]):
        result = run_cli(command, cwd=sample_project, env=env)
        assert result.returncode == 2, (command, result.output)
        assert "EMARSYS_API_URL must be the API's base URL" in result.output, (command, result.output)
        assert repr(emulator.url) in result.output
    assert httpx.get(f"{emulator.url}/_emulator/requests").json() == []


def test_a_secret_bound_for_emarsys_while_the_api_calls_go_elsewhere_is_refused(sample_project, emulator):
    env = {k: v for k, v in emulator_env(emulator).items() if k != "EMARSYS_AUTH_URL"}
    for command in (["run"], ["plan"]):
        result = run_cli(command, cwd=sample_project, env=env)
        assert result.returncode == 2, (command, result.output)
        assert "EMARSYS_API_URL" in result.stderr and "EMARSYS_AUTH_URL is not set" in result.stderr
        assert f"{emulator.url}/oauth2/token" in result.stderr
        assert env["EMARSYS_CLIENT_SECRET"] not in result.output
    assert httpx.get(f"{emulator.url}/_emulator/requests").json() == []
    # Set explicitly, the token endpoint is the user's choice.
    assert run_cli(["run"], cwd=sample_project, env=emulator_env(emulator)).returncode == 1


def test_validate_checks_the_runners_own_settings(sample_project):
    result = run_cli(["validate", "--no-emarsys"], cwd=sample_project,
                     env={"EMARSYS_SYNC_DUCKDB_MEMORY_LIMIT": "lots"})
    assert result.returncode == 2, result.output
    assert "EMARSYS_SYNC_DUCKDB_MEMORY_LIMIT must be a size" in result.stderr
    fine = run_cli(["validate", "--no-emarsys"], cwd=sample_project,
                   env={"EMARSYS_SYNC_DUCKDB_MEMORY_LIMIT": "1GB"})
    assert fine.returncode == 0, fine.output
