"""What the command line promises a user, on the sample dbt project against the bundled emulator: the
exit code `plan` gives is the one `run` would give, skipped syncs don't pass for success, unknown names
are errors that say what exists, a plan never overwrites a run's results, and settings that would send
requests (or a secret) to the wrong place are refused before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import emulator_env, run_cli, run_dbt

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
    assert "no_such_field" in ran.stderr

    planned = run_cli(["plan", "--select", "emarsys_contacts"], cwd=sample_project, env=env)
    assert planned.returncode == 2, planned.output
    assert "no_such_field" in planned.stderr and "Traceback" not in planned.output
    assert emarsys_writes(emulator) == []
