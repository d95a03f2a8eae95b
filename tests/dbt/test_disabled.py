"""A selection whose syncs are all disabled (`enabled: false`) is not an error, but it says so instead
of printing an empty table."""

from tests.conftest import emulator_env, run_cli


def test_a_selection_of_disabled_syncs_says_there_is_nothing_to_do(kinds, emulator):
    yml = kinds / "models" / "contacts" / "_contacts.yml"
    yml.write_text(yml.read_text().replace("""            - name: view_contacts
              key: {column: email}""", """            - name: view_contacts
              enabled: false
              key: {column: email}"""))
    for command in (["run"], ["plan"]):
        result = run_cli([*command, "--select", "view_contacts"], cwd=kinds, env=emulator_env(emulator))
        assert result.returncode == 0, result.output
        assert "warning: nothing to do: every selected sync is disabled (enabled: false): view_contacts" \
            in result.stderr, result.output
    # One disabled among enabled ones: no such warning.
    result = run_cli(["plan", "--select", "table_contacts"], cwd=kinds, env=emulator_env(emulator))
    assert "nothing to do" not in result.stderr, result.output
