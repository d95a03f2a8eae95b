"""A secret never reaches a declaration: dbt renders `env_var()` in YAML before the manifest is written,
so the runner refuses a declaration holding a secret variable's value, and `env_var()` of a secret
variable in the raw YAML, with validate, ls, plan and run alike: exit 2, naming the file, model and key,
never printing the value."""

from __future__ import annotations

import pytest

from tests.conftest import emulator_env, run_cli
from tests.dbt.helpers import line_of

SECRET = "s3cr3t-from-the-environment"

SECRET_LIST = """
            - name: secret_list
              object: contact_list
              behaviour: mirror
              list: "{{ env_var('EMARSYS_CLIENT_SECRET') }}"
              key: {column: email}
"""


def _declare_secret_list(project):
    yml = project / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text().replace("              fields: {first_name: first_name}\n",
                                           "              fields: {first_name: first_name}\n" + SECRET_LIST, 1))
    return yml


@pytest.mark.parametrize("command", [
    ["validate", "--no-emarsys"],
    ["validate"],
    ["ls", "--output", "json"],
    ["ls"],
    ["plan"],
    ["run"],
])
def test_a_secret_rendered_into_yaml_is_refused_without_printing_it(gating, emulator, command):
    yml = _declare_secret_list(gating)
    env = {**emulator_env(emulator), "EMARSYS_CLIENT_SECRET": SECRET}
    result = run_cli([*command, "--select", "good"], cwd=gating, env=env)
    assert result.returncode == 2, result.output
    line = line_of(yml, "list: \"{{ env_var('EMARSYS_CLIENT_SECRET') }}\"")
    assert (f"models/marts/_marts.yml:{line}: model good: emarsys.syncs[1].list: env_var('EMARSYS_CLIENT_SECRET'): "
            "secret environment variables can't be used in a declaration") in result.output
    assert SECRET not in result.output
    assert SECRET not in "".join(p.read_text(errors="replace") for p in (gating / "target").glob("*.json")
                                 if p.name != "manifest.json")


def test_a_secret_value_arriving_through_a_var_is_refused(gating):
    """No env_var() in the file: the value itself gives the secret away."""
    yml = gating / "models" / "marts" / "_marts.yml"
    yml.write_text(yml.read_text().replace("              fields: {first_name: first_name}\n",
                                           "              fields: {first_name: first_name}\n"
                                           "              constants: {source: \"dbt {{ var('origin') }}\"}\n", 1))
    env = {"DBT_CLOUD_API_TOKEN": SECRET}
    result = run_cli(["ls", "--output", "json", "--vars", f"{{origin: {SECRET}}}"], cwd=gating, env=env)
    assert result.returncode == 2, result.output
    assert (f"models/marts/_marts.yml:{line_of(yml, 'constants: {source:')}: model good: "
            "emarsys.syncs[0].constants.source: holds the value of the secret environment variable "
            "DBT_CLOUD_API_TOKEN") in result.output
    assert SECRET not in result.output
    # Short values are not looked for (too many ordinary words would match).
    result = run_cli(["ls", "--output", "json", "--vars", "{origin: dbt}"], cwd=gating,
                     env={"EMARSYS_SECRET": "dbt"})
    assert result.returncode == 0, result.output


def test_a_secret_env_var_in_dbt_project_meta_is_refused(gating):
    project_file = gating / "dbt_project.yml"
    project_file.write_text(project_file.read_text().replace(
        "      +tags: [marts]\n",
        "      +tags: [marts]\n"
        "      +meta:\n"
        "        emarsys_defaults:\n"
        "          constants: {source: \"{{ env_var('DBT_CLOUD_WEBHOOK_SECRET', 'unset') }}\"}\n"))
    result = run_cli(["validate", "--no-emarsys", "--select", "good"], cwd=gating)
    assert result.returncode == 2, result.output
    assert (f"dbt_project.yml:{line_of(project_file, 'constants: {source:')}: model good: "
            "emarsys_defaults.constants.source: env_var('DBT_CLOUD_WEBHOOK_SECRET'): secret environment "
            "variables can't be used in a declaration") in result.output
