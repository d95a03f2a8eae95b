"""`dbt-emarsys-sync run` after a build where one model failed, one was skipped and one's test failed: only
the models that built and passed their tests reach Emarsys; the others are in the report with why."""

from __future__ import annotations

import json

import httpx

from tests.conftest import emulator_env, run_cli


def synced_emails(emulator) -> set[str]:
    return {c.get("3") for c in httpx.get(f"{emulator.url}/_emulator/contacts").json()}


def results(project) -> dict[str, dict]:
    artifact = json.loads((project / "target" / "emarsys_sync_results.json").read_text())
    return {r["name"]: r for r in artifact["results"]}


def test_run_syncs_only_what_built_and_passed_its_tests(gating, emulator):
    result = run_cli(["run", "--select", "tag:marts"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode == 4, result.output          # 4: some syncs were skipped
    by_name = results(gating)
    assert by_name["good_sync"]["status"] == "success" and by_name["warned_sync"]["status"] == "success"
    for skipped in ("broken_sync", "after_broken_sync", "tested_sync"):
        assert by_name[skipped]["status"] == "skipped"
    assert "the model failed in the last `dbt build`" in by_name["broken_sync"]["message"]
    assert "dbt skipped the model" in by_name["after_broken_sync"]["message"]
    assert "not_null_tested_tier (1 failing row)" in by_name["tested_sync"]["message"]
    assert "Skipping tested_sync: test failed in the last `dbt build`" in result.stdout
    assert synced_emails(emulator) == {"ada@example.com", "grace@example.com", "alan@example.com"}


def test_ignore_build_results_syncs_a_model_whose_test_failed(gating, emulator):
    result = run_cli(["run", "--select", "tested", "--ignore-build-results"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode in (0, 1), result.output          # 1: a row may be rejected (the null tier)
    assert results(gating)["tested_sync"]["status"] in ("success", "rejected_rows")
    assert "ada@example.com" in synced_emails(emulator)


def test_results_of_a_later_compile_stop_the_run_before_anything_is_sent(gating, emulator):
    from tests.dbt.helpers import dbt

    dbt(["compile"], gating)
    result = run_cli(["run", "--select", "good"], cwd=gating, env=emulator_env(emulator))
    assert result.returncode == 2
    assert "run_results.json is from `dbt compile`" in result.stderr
    assert synced_emails(emulator) == set()
