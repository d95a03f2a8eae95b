"""The Admin API client against the stand-in over loopback: auth, steps, artifacts, retries."""

from __future__ import annotations

import json

import pytest

from dbt_emarsys_sync.cloud.api import AdminApiClient
from dbt_emarsys_sync.cloud.errors import CloudAuthError, CloudNotFound, CloudUnavailable, RunNotSyncable
from dbt_emarsys_sync.cloud.run import artifact_steps, check_syncable, fetch_artifacts
from dbt_emarsys_sync.cloud.settings import AdminApiSettings, RunPolicy
from tests.integration.cloud.conftest import FAST_RETRY
from tests.integration.cloud.standin import build_steps


def client_for(cloud, token: str | None = None) -> AdminApiClient:
    settings = AdminApiSettings(account_id=cloud.account_id, token=token or cloud.token, url=cloud.url)
    return AdminApiClient(settings, retry=FAST_RETRY)


def run_results(*results: tuple[str, str]) -> bytes:
    return json.dumps({"metadata": {"dbt_version": "1.11.0"}, "elapsed_time": 1.5, "args": {"which": "x"},
                       "results": [{"unique_id": uid, "status": status} for uid, status in results]}).encode()


def test_run_with_its_steps_and_job(cloud):
    cloud.add_run(11, job_id=7, environment_id=70, steps=build_steps())
    with client_for(cloud) as api:
        run = api.get_run(11)
    assert (run.id, run.job_id, run.environment_id, run.status) == (11, 7, 70, 10)
    assert run.job_name == "Nightly build"
    assert [s.verb for s in run.steps] == ["", "", "deps", "build", "docs"]
    [request] = cloud.requests
    assert request["authorization_scheme"] == "Token"
    assert json.loads(request["query"]["include_related"]) == ["run_steps", "job"]


def test_the_build_step_is_chosen_not_the_last_step(cloud):
    cloud.add_run(12, steps=build_steps(command="dbt build --select tag:emarsys --target prod"))
    with client_for(cloud) as api:
        manifest_step, result_steps = artifact_steps(api.get_run(12))
    assert manifest_step.index == 4 and [s.index for s in result_steps] == [4]


def test_run_then_test_steps_are_merged(cloud, tmp_path):
    steps = [{"index": 1, "name": "Clone git repository", "status": 10},
             {"index": 2, "name": "Invoke dbt with `dbt seed`", "status": 10},
             {"index": 3, "name": "Invoke dbt with `dbt run`", "status": 10},
             {"index": 4, "name": "Invoke dbt with `dbt run-operation grant_select`", "status": 10},
             {"index": 5, "name": "Invoke dbt with `dbt test`", "status": 20},
             {"index": 6, "name": "Invoke dbt with `dbt docs generate`", "status": 10}]
    artifacts = {
        2: {"run_results.json": run_results(("seed.p.raw", "success"))},
        3: {"manifest.json": b'{"metadata": {"project_name": "p"}}',
            "run_results.json": run_results(("model.p.a", "success"), ("model.p.b", "success"))},
        5: {"run_results.json": run_results(("test.p.not_null_a", "fail"), ("test.p.unique_b", "pass"))},
    }
    cloud.add_run(13, status=20, steps=steps, artifacts=artifacts)
    with client_for(cloud) as api:
        run = api.get_run(13)
        downloaded = fetch_artifacts(api, run, tmp_path / "run-13")
    assert downloaded.manifest_step.index == 3
    assert [s.index for s in downloaded.result_steps] == [2, 3, 5]
    merged = json.loads((tmp_path / "run-13" / "run_results.json").read_text())
    assert {r["unique_id"]: r["status"] for r in merged["results"]} == {
        "seed.p.raw": "success", "model.p.a": "success", "model.p.b": "success",
        "test.p.not_null_a": "fail", "test.p.unique_b": "pass"}
    assert merged["elapsed_time"] == 4.5
    assert (tmp_path / "run-13" / "manifest.json").read_bytes() == artifacts[3]["manifest.json"]
    summary = json.loads((tmp_path / "run-13" / "dbt_cloud_run.json").read_text())
    assert summary["run_id"] == 13 and summary["status"] == 20


def test_a_run_without_a_build_step_is_not_syncable(cloud):
    cloud.add_run(14, steps=[{"index": 1, "name": "Clone git repository", "status": 10},
                             {"index": 2, "name": "Invoke dbt with `dbt source freshness`", "status": 10}])
    with client_for(cloud) as api:
        run = api.get_run(14)
    with pytest.raises(RunNotSyncable, match="no `dbt build` or `dbt run` step"):
        artifact_steps(run)


def test_unfinished_failed_and_cancelled_runs_are_not_syncable(cloud):
    cloud.add_run(15, status=3)
    cloud.add_run(16, status=20)
    cloud.add_run(17, status=30)
    with client_for(cloud) as api:
        with pytest.raises(RunNotSyncable, match="not finished"):
            check_syncable(api.get_run(15), RunPolicy(), apply_allow_lists=False)
        with pytest.raises(RunNotSyncable, match="the run failed"):
            check_syncable(api.get_run(16), RunPolicy(), apply_allow_lists=False)
        check_syncable(api.get_run(16), RunPolicy(sync_after_failed_runs=True), apply_allow_lists=False)
        with pytest.raises(RunNotSyncable, match="cancelled"):
            check_syncable(api.get_run(17), RunPolicy(sync_after_failed_runs=True), apply_allow_lists=False)


def test_latest_completed_run_of_a_job_skips_runs_in_progress(cloud):
    cloud.add_run(20, job_id=9, status=10)
    cloud.add_run(21, job_id=9, status=20)
    cloud.add_run(22, job_id=9, status=3)
    cloud.add_run(23, job_id=10, status=10)
    with client_for(cloud) as api:
        assert api.latest_completed_run(9).id == 21
        with pytest.raises(CloudNotFound, match="job 11 has no finished run"):
            api.latest_completed_run(11)


def test_a_rejected_token_and_a_missing_run_say_what_to_fix(cloud):
    cloud.add_run(30)
    with client_for(cloud, token="wrong") as api:
        with pytest.raises(CloudAuthError, match="DBT_CLOUD_API_TOKEN") as error:
            api.get_run(30)
    assert "wrong" not in str(error.value)
    with client_for(cloud) as api:
        with pytest.raises(CloudNotFound, match=f"no run 31 in account {cloud.account_id}"):
            api.get_run(31)
    # Neither is retried: they won't get better.
    assert len(cloud.requests) == 2


def test_transient_failures_are_retried(cloud, tmp_path):
    cloud.add_run(40, artifacts={4: {"manifest.json": b"{}"}})
    cloud.fail("/runs/40/", status=500, count=1)
    cloud.fail("artifacts/manifest.json", status=429, count=2)
    with client_for(cloud) as api:
        assert api.get_run(40).id == 40
        assert api.download_artifact(40, "manifest.json", 4, tmp_path / "m.json") == 2
    assert (tmp_path / "m.json").read_bytes() == b"{}"
    assert len(cloud.requests) == 2 + 3


def test_retries_run_out_with_a_clear_report(cloud, tmp_path):
    cloud.add_run(41, artifacts={4: {"manifest.json": b"{}"}})
    cloud.fail("artifacts/manifest.json", status=503, count=100)
    with client_for(cloud) as api:
        with pytest.raises(CloudUnavailable, match=r"gave up after retries: GET manifest.json of run 41 "
                                                   r"\(step 4\): HTTP 503"):
            api.download_artifact(41, "manifest.json", 4, tmp_path / "m.json")
    assert len(cloud.requests) == FAST_RETRY.attempts
    assert not (tmp_path / "m.json").exists()


def test_unreachable_api_is_retried_then_reported(tmp_path):
    import socket

    with socket.socket() as s:   # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = AdminApiSettings(account_id=1, token="t", url=f"http://127.0.0.1:{port}")
    with AdminApiClient(settings, retry=FAST_RETRY) as api:
        with pytest.raises(CloudUnavailable, match="connection error"):
            api.get_run(1)
