"""`dbt-emarsys-sync validate`: declarations, the built models' columns and types, and the Emarsys
connection and fields, all checked before anything is sent, every problem at once, exit 2 when any."""

from __future__ import annotations

import json

from tests.conftest import emulator_env, run_cli
from tests.dbt.helpers import line_of


def test_validate_reports_every_problem_of_the_project_at_once(kinds, emulator):
    yml = kinds / "models" / "contacts" / "_contacts.yml"
    text = yml.read_text()
    text = text.replace("is_vip: optin                   # boolean -> opt-in",
                        "is_vip: signup_date             # boolean -> a date field: can never work")
    text = text.replace("fields: {first_name: first_name}\n\n  - name: incremental_contacts",
                        "fields: {first_name: first_nme}\n\n  - name: incremental_contacts")
    text = text.replace("fields: {first_name: first_name, signed_up_at: signup_date}",
                        "fields: {firstname: first_name, signed_up_at: signup_date}")
    yml.write_text(text)
    result = run_cli(["validate", "--output", "json"], cwd=kinds, env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    report = json.loads(result.stdout)
    found = {(p["model"], p["key"]): p for p in report["problems"]}
    assert set(found) == {
        ("table_contacts", "emarsys.syncs[0].fields.is_vip"),
        # is_vip now writes signup_date, which signed_up_at writes already
        ("table_contacts", "emarsys.syncs[0].fields.signed_up_at"),
        ("view_contacts", "emarsys.syncs[0].fields.first_name"),
        ("incremental_contacts", "emarsys.syncs[0].fields.firstname"),
        ("ephemeral_contacts", "emarsys.syncs[0]"),
        ("unbuilt_contacts", "emarsys.syncs[0]"),
    }
    type_problem = found[("table_contacts", "emarsys.syncs[0].fields.is_vip")]
    assert type_problem["message"] == ("column 'is_vip' is BOOLEAN (a boolean) but the Emarsys field "
                                       "'Signup Date' (id 5004, date) takes dates (a date or timestamp "
                                       "column, or text as YYYY-MM-DD)")
    assert type_problem["path"] == "models/contacts/_contacts.yml"
    assert type_problem["line"] == line_of(yml, "is_vip: signup_date")
    assert found[("view_contacts", "emarsys.syncs[0].fields.first_name")]["message"] == \
        "no Emarsys field named 'first_nme'; did you mean 'first_name'?"
    assert found[("incremental_contacts", "emarsys.syncs[0].fields.firstname")]["message"].startswith(
        "column 'firstname' is not in the model; did you mean 'first_name'? (columns: id, email, first_name")
    assert "is ephemeral" in found[("ephemeral_contacts", "emarsys.syncs[0]")]["message"]
    assert "run `dbt build --select unbuilt_contacts` first" in found[("unbuilt_contacts", "emarsys.syncs[0]")][
        "message"]
    # Timestamps into date fields, booleans into opt-in, decimals into numbers, text into choices: fine.
    assert not [p for p in report["problems"] if p["model"] in ("mixed_case", "contracted_contacts",
                                                                "current_people", "located_contacts")]


def test_validate_passes_on_healthy_syncs_and_says_what_it_checked(gating, emulator):
    result = run_cli(["validate", "--select", "good", "tested", "warned"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode == 0, result.output
    assert result.stdout.strip() == ("3 sync(s) OK (declarations, columns and Emarsys fields): "
                                     "good_sync, tested_sync, warned_sync")


def test_validate_text_output_has_one_problem_per_line_with_file_and_line(kinds, emulator):
    result = run_cli(["validate", "--select", "ephemeral_contacts", "unbuilt_contacts"], cwd=kinds,
                     env=emulator_env(emulator))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "error: 2 problem(s) found:"
    yml = kinds / "models" / "contacts" / "_contacts.yml"
    assert lines[1] == (f"  models/contacts/_contacts.yml:{line_of(yml, '    - name: ephemeral_contacts')}: "
                        "model ephemeral_contacts: emarsys.syncs[0]: the model is ephemeral: there is no relation "
                        "to read; materialize it as a table or view (or declare the sync on a model that selects "
                        "from it)")


def test_validate_reports_bad_credentials_with_the_other_problems(gating, emulator):
    env = {**emulator_env(emulator), "EMARSYS_CLIENT_SECRET": "wrong-secret-value"}
    result = run_cli(["validate", "--select", "good"], cwd=gating, env=env)
    assert result.returncode == 2
    assert "environment: EMARSYS_*: can't use the Emarsys API:" in result.stderr
    assert "wrong-secret-value" not in result.output


def test_validate_without_emarsys_checks_declarations_and_columns(gating):
    yml = gating / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text().replace("fields: {first_name: first_name}", "fields: {firstname: first_name}"))
    result = run_cli(["validate", "--no-emarsys"], cwd=gating)
    assert result.returncode == 2
    assert "model good: emarsys.syncs[0].fields.firstname: column 'firstname' is not in the model; did you " \
           "mean 'first_name'?" in result.stderr
    # broken and after_broken never built: that is reported too (validate doesn't gate, it checks).
    assert "model broken: emarsys.syncs[0]: the model is not built" in result.stderr


def test_declaration_problems_exit_2_before_touching_the_warehouse(gating):
    yml = gating / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text()
                   .replace("- name: good_sync\n", "- name: good_sync\n              client_secret: abc123\n")
                   .replace("- name: tested_sync\n", "- name: tested_sync\n              behavior: mirror\n"))
    result = run_cli(["validate", "--no-emarsys", "--select", "good", "tested"], cwd=gating)
    assert result.returncode == 2
    assert "model good: emarsys.syncs[0].client_secret: looks like a credential" in result.stderr
    assert "model tested: emarsys.syncs[0].behavior: unknown key 'behavior'; did you mean 'behaviour'?" \
        in result.stderr
    assert "abc123" not in result.output


def test_one_validate_pass_reports_every_problem_of_every_sync(gating, emulator):
    """A schema typo doesn't hide the column and field problems of the same sync, a credential doesn't
    hide the rest of its sync, and a duplicate name is reported with everything else."""
    yml = gating / "models" / "marts" / "_marts.yml"
    text = yml.read_text()
    text = text.replace("""            - name: good_sync
              key: {column: email}
              fields: {first_name: first_name}""", """            - name: good_sync
              behavior: update_only
              object: contactlist
              key: {column: email}
              fields: {first_nam: first_name, first_name: Loyalty Teir}""")
    text = text.replace("""            - name: tested_sync
              key: {column: email}
              fields: {tier: loyalty_tier}""", """            - name: tested_sync
              api_key: abc123
              null_policy: clean
              key: {column: email}
              fields: {tier: loyalty_tier, tire: first_name}""")
    text = text.replace("- name: warned_sync", "- name: good_sync")
    text = text.replace("""            - name: broken_sync
              key: {column: email}""", """            - name: broken_sync
              keys: {column: email}""")
    yml.write_text(text)
    result = run_cli(["validate", "--output", "json"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode == 2, result.output
    report = json.loads(result.stdout)
    found = {(p["model"], p["key"]): p["message"] for p in report["problems"]}
    assert found[("good", "emarsys.syncs[0].behavior")] == "unknown key 'behavior'; did you mean 'behaviour'?"
    assert found[("good", "emarsys.syncs[0].object")] == \
        "expected one of 'contact', 'contact_list', got 'contactlist'; did you mean 'contact_list'?"
    assert found[("good", "emarsys.syncs[0].fields.first_nam")].startswith(
        "column 'first_nam' is not in the model; did you mean 'first_name'?")
    assert found[("good", "emarsys.syncs[0].fields.first_name")] == \
        "no Emarsys field named 'Loyalty Teir'; did you mean 'loyalty_tier'?"
    assert found[("tested", "emarsys.syncs[0].api_key")].startswith("looks like a credential")
    assert found[("tested", "emarsys.syncs[0].null_policy")].startswith("expected one of 'skip', 'clear'")
    assert found[("tested", "emarsys.syncs[0].fields.tire")].startswith("column 'tire' is not in the model")
    assert found[("warned", "emarsys.syncs[0].name")].startswith("the sync name 'good_sync' is also used by model good")
    assert found[("broken", "emarsys.syncs[0].keys")] == "unknown key 'keys'; did you mean 'key'?"
    assert found[("broken", "emarsys.syncs[0].key")] == "required key is missing"
    assert "abc123" not in result.output
    # What can't be checked at all is said, not silently skipped.
    assert [(n["model"], n["message"]) for n in report["notes"]] == [
        ("broken", "column and field checks skipped for sync broken_sync until its declaration is fixed")]
    text_result = run_cli(["validate"], cwd=gating, env=emulator_env(emulator))
    assert text_result.returncode == 2
    assert f"note: models/marts/_marts.yml:{line_of(yml, '- name: broken_sync')}: model broken: emarsys.syncs[0]: " \
           "column and field checks skipped for sync broken_sync" in text_result.stderr
