"""Gating on the last build (tests/fixtures/projects/gating, built once with every outcome): a model syncs
only when it built and its tests passed; whole-run problems (no results, results of another command or
another target) stop the run with what to do."""

from __future__ import annotations

import json
import shutil

import pytest

from dbt_emarsys_sync.dbt.gating import BuildResults, BuildResultsError, decide, gate
from tests.dbt.helpers import dbt, load


def models(project):
    return {s.model.unique_id: s.model for s in project.syncs()}


def test_the_failing_build_decides_per_model_with_reasons(gating):
    project = load(gating)
    decision = gate(project, models(project).values())
    assert sorted(decision.allowed) == ["model.gating.good", "model.gating.stg_people", "model.gating.warned"]
    assert set(decision.skipped) == {"model.gating.broken", "model.gating.after_broken", "model.gating.tested"}
    at = decision.results.generated_at
    assert decision.reason("model.gating.broken").startswith(
        f"the model failed in the last `dbt build` at {at}: Runtime Error in model broken")
    assert "no_such_column" in decision.reason("model.gating.broken")
    assert decision.reason("model.gating.after_broken") == \
        f"dbt skipped the model in the last `dbt build` at {at} (an upstream model or test failed)"
    assert decision.reason("model.gating.tested") == \
        f"test failed in the last `dbt build` at {at}: not_null_tested_tier (1 failing row)"


def test_a_warning_test_does_not_stop_the_sync(gating):
    project = load(gating)
    results = json.loads((gating / "target" / "run_results.json").read_text())
    [status] = [r["status"] for r in results["results"]
                if r["unique_id"].startswith("test.gating.not_null_warned_tier.")]
    assert status == "warn"
    assert gate(project, [models(project)["model.gating.warned"]]).allows("model.gating.warned")


@pytest.mark.parametrize("command", [["compile"], ["test"], ["docs", "generate"]])
def test_results_overwritten_by_a_later_command_stop_the_run_but_a_copy_still_decides(gating, command, tmp_path):
    saved = tmp_path / "build_artifacts"
    shutil.copytree(gating / "target", saved)
    dbt(command, gating, ok=command != ["test"])
    project = load(gating)
    with pytest.raises(BuildResultsError) as info:
        gate(project, models(project).values())
    message = str(info.value)
    assert f"run_results.json is from `dbt {' '.join(command)}`" in message
    assert "which overwrote the build's results" in message
    assert "--artifacts-dir" in message and "--ignore-build-results" in message
    # A copy of the build's target/ taken before, passed as --artifacts-dir, still decides.
    project = load(gating, artifacts_dir=str(saved))
    assert project.manifest_origin == str(saved / "manifest.json")
    decision = gate(project, models(project).values())
    assert sorted(decision.allowed) == ["model.gating.good", "model.gating.stg_people", "model.gating.warned"]


def test_builds_of_another_target(gating, tmp_path):
    # Built for target dev (the profile's default); this run reads prod.
    with pytest.raises(BuildResultsError) as info:
        project = load(gating, target="prod")
        gate(project, models(project).values())
    assert "built target 'dev', this run reads target 'prod'" in str(info.value)

    dbt(["build", "--target", "prod", "--select", "+good"], gating)
    project = load(gating, target="prod")
    assert gate(project, models(project).values()).allows("model.gating.good")
    with pytest.raises(BuildResultsError, match="built target 'prod', this run reads target 'dev'"):
        project = load(gating)
        gate(project, models(project).values())
    # Artifacts of a build made elsewhere: that build's manifest names the relations, whatever its target
    # was called (a dbt Cloud job's target needn't match the local profile's).
    saved = tmp_path / "cloud_run"
    shutil.copytree(gating / "target", saved)
    project = load(gating, artifacts_dir=str(saved))
    assert gate(project, models(project).values()).allows("model.gating.good")
    assert models(project)["model.gating.good"].relation_name == '"gating"."prod"."good"'


def test_without_run_results_nothing_syncs(gating):
    (gating / "target" / "run_results.json").unlink()
    project = load(gating)
    with pytest.raises(BuildResultsError, match=r"run_results.json not found: run `dbt build` before syncing"):
        gate(project, models(project).values())


def test_ignore_build_results_allows_everything_and_reads_nothing(gating):
    (gating / "target" / "run_results.json").unlink()
    project = load(gating)
    decision = gate(project, models(project).values(), ignore_build_results=True)
    assert len(decision.allowed) == 6 and decision.skipped == {} and decision.ignored


def test_models_outside_the_last_build_are_skipped_with_the_command_to_run(gating):
    dbt(["build", "--select", "good"], gating)
    project = load(gating)
    decision = gate(project, models(project).values())
    assert decision.allowed == ["model.gating.good"]
    assert decision.reason("model.gating.tested").startswith("not built by the last `dbt build` at ")
    assert decision.reason("model.gating.tested").endswith("build it first: `dbt build --select tested`")


# -- the decision itself, on run_results as other dbt versions and engines write them ------------------


class Model:
    def __init__(self, uid):
        self.unique_id = uid
        self.selector = uid.split(".")[-1]


def results(*entries, which="build", target=None):
    return BuildResults.from_json({
        "metadata": {"generated_at": "2026-12-01T10:00:00Z"},
        "args": {"which": which, **({"target": target} if target else {})},
        # Fusion leaves out keys such as `failures` and `message`: absent keys are normal.
        "results": [{"unique_id": uid, "status": status, **extra} for uid, status, extra in entries],
    }, "target/run_results.json")


@pytest.mark.parametrize("status, extra, reason", [
    ("success", {}, None),
    ("partial success", {}, "the model was only partly built in the last `dbt build` at 2026-12-01T10:00:00Z "
                            "(some batches failed)"),
    ("error", {"message": "Database Error\n  boom"}, "the model failed in the last `dbt build` at "
                                                      "2026-12-01T10:00:00Z: Database Error boom"),
    ("skipped", {}, "dbt skipped the model in the last `dbt build` at 2026-12-01T10:00:00Z (an upstream "
                    "model or test failed)"),
    ("no-op", {}, "the model's status in the last `dbt build` at 2026-12-01T10:00:00Z is 'no-op'"),
])
def test_model_statuses(status, extra, reason):
    decision = decide(results(("model.p.m", status, extra)), {}, [Model("model.p.m")])
    assert decision.reason("model.p.m") == reason
    assert decision.allows("model.p.m") is (reason is None)


def test_failed_and_errored_tests_and_unit_tests_stop_the_model_warnings_and_skips_do_not():
    child_map = {"model.p.m": ["test.p.not_null_m_id.1", "test.p.unique_m_id.2", "unit_test.p.m.check_m",
                               "test.p.accepted_m.3", "test.p.relationships_m.4", "model.p.child",
                               "exposure.p.emarsys_m"]}
    build = results(("model.p.m", "success", {}), ("test.p.not_null_m_id.1", "fail", {"failures": 3}),
                    ("test.p.unique_m_id.2", "error", {"message": "Compilation Error"}),
                    ("unit_test.p.m.check_m", "fail", {}), ("test.p.accepted_m.3", "warn", {"failures": 2}),
                    ("test.p.relationships_m.4", "skipped", {}))
    reason = decide(build, child_map, [Model("model.p.m")]).reason("model.p.m")
    assert reason == ("tests failed in the last `dbt build` at 2026-12-01T10:00:00Z: "
                      "not_null_m_id (3 failing rows), unique_m_id (error: Compilation Error), "
                      "check_m (failed)")
    only_warnings = results(("model.p.m", "success", {}), ("test.p.accepted_m.3", "warn", {"failures": 2}))
    assert decide(only_warnings, child_map, [Model("model.p.m")]).allows("model.p.m")


@pytest.mark.parametrize("which", ["run", "snapshot", "seed", "retry", "build"])
def test_commands_that_build(which):
    assert decide(results(("model.p.m", "success", {}), which=which), {}, [Model("model.p.m")]).allows("model.p.m")


@pytest.mark.parametrize("which", ["compile", "test", "docs", "run-operation", "show", None])
def test_commands_that_dont_build(which):
    with pytest.raises(BuildResultsError, match=f"is from `dbt {which or '[?]'}`"):
        decide(results(("model.p.m", "success", {}), which=which), {}, [Model("model.p.m")])


def test_target_of_the_build_against_this_run():
    build = results(("model.p.m", "success", {}), target="prod")
    assert decide(build, {}, [Model("model.p.m")], expected_target="prod").allows("model.p.m")
    with pytest.raises(BuildResultsError, match="built target 'prod', this run reads target 'dev'"):
        decide(build, {}, [Model("model.p.m")], expected_target="dev", default_target="dev")
    default_build = results(("model.p.m", "success", {}))
    assert decide(default_build, {}, [Model("model.p.m")], expected_target="dev", default_target="dev").allows(
        "model.p.m")
    with pytest.raises(BuildResultsError, match="built target 'dev', this run reads target 'prod'"):
        decide(default_build, {}, [Model("model.p.m")], expected_target="prod", default_target="dev")
