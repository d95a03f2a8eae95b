"""The command line, as a user runs it: `run --dbt-cloud-run-id/--dbt-cloud-job-id` and `serve`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import httpx
import pytest

from tests.conftest import BIN, emulator_env, run_cli
from tests.integration.cloud.conftest import WEBHOOK_SECRET
from tests.integration.cloud.standin import WebhookSender, build_steps, webhook_event

pytestmark = pytest.mark.e2e


def cli_env(cloud, emulator, project) -> dict[str, str]:
    return {**cloud.env(), **emulator_env(emulator),
            "SAMPLE_DUCKDB_PATH": str(project / "target" / "sample_shop.duckdb")}


def test_run_syncs_a_dbt_cloud_run(cloud, build_artifacts, cloud_project, emulator):
    cloud.add_run(801, job_id=7, artifacts=build_artifacts.for_run())
    result = run_cli(["run", "--dbt-cloud-run-id", "801"], cwd=cloud_project,
                     env=cli_env(cloud, emulator, cloud_project))
    assert result.returncode == 1, result.output     # synced, with the sample's invalid emails rejected
    assert "dbt Cloud run 801 of job 7 (Nightly build), environment 70: Success" in result.stdout
    assert "Emarsys sync results" in result.stdout
    assert httpx.get(f"{emulator.url}/_emulator/contacts").json()
    assert [r["query"]["step"] for r in cloud.artifact_requests()] == ["4", "4"]
    assert (cloud_project / "target" / "dbt_cloud" / "run-801" / "emarsys_sync_results.json").exists()


def test_run_takes_the_latest_finished_run_of_a_job(cloud, build_artifacts, cloud_project, emulator):
    cloud.add_run(811, job_id=9, artifacts=build_artifacts.for_run())
    cloud.add_run(812, job_id=9, artifacts=build_artifacts.for_run())
    cloud.add_run(813, job_id=9, status=3, steps=build_steps(build_status=3, docs=False))  # still running
    result = run_cli(["run", "--dbt-cloud-job-id", "9"], cwd=cloud_project,
                     env=cli_env(cloud, emulator, cloud_project))
    assert result.returncode == 1, result.output
    assert "dbt Cloud run 812 of job 9" in result.stdout
    assert {r["path"].split("/runs/")[1].split("/")[0] for r in cloud.artifact_requests()} == {"812"}


def test_run_refuses_a_failed_run_by_default(cloud, build_artifacts, cloud_project, emulator):
    cloud.add_run(821, status=20, steps=build_steps(build_status=20), artifacts=build_artifacts.for_run())
    result = run_cli(["run", "--dbt-cloud-run-id", "821"], cwd=cloud_project,
                     env=cli_env(cloud, emulator, cloud_project))
    assert result.returncode == 2, result.output
    assert "run 821 of job 7 is not synced: the run failed" in " ".join(result.stderr.split())
    assert cloud.artifact_requests() == []
    assert httpx.get(f"{emulator.url}/_emulator/contacts").json() == []


def test_run_reports_missing_dbt_cloud_settings(cloud_project, emulator):
    result = run_cli(["run", "--dbt-cloud-run-id", "1"], cwd=cloud_project, env=emulator_env(emulator))
    assert result.returncode == 2
    assert "DBT_CLOUD_ACCOUNT_ID and DBT_CLOUD_API_TOKEN are not set" in " ".join(result.stderr.split())


def test_serve_refuses_to_start_without_a_webhook_secret(cloud, cloud_project, emulator):
    result = run_cli(["serve"], cwd=cloud_project, env={**cloud.env(), **emulator_env(emulator)}, timeout=60)
    assert result.returncode == 2
    assert "DBT_CLOUD_WEBHOOK_SECRET is not set" in " ".join(result.stderr.split())


def test_serve_as_a_user_starts_it(cloud, build_artifacts, cloud_project, emulator):
    """`dbt-emarsys-sync serve` in a subprocess: JSON logs, health check, a signed delivery synced."""
    cloud.add_run(831, artifacts=build_artifacts.for_run())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
    env.update(cli_env(cloud, emulator, cloud_project), DBT_CLOUD_WEBHOOK_SECRET=WEBHOOK_SECRET)
    proc = subprocess.Popen([str(BIN / "dbt-emarsys-sync"), "serve", "--port", "0", "--log-format", "json"],
                            cwd=cloud_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[dict] = []
    try:
        url = _wait_for_listening(proc, lines)
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        sender = WebhookSender(f"{url}/webhooks/dbt-cloud", WEBHOOK_SECRET)
        assert sender.send(webhook_event(cloud.runs[831], cloud.account_id)).status_code == 202
        _read_until(proc, lines, lambda line: line["message"].startswith("sync of run 831 finished"))
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    lines += [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    finished = next(line for line in lines if line["message"].startswith("sync of run 831 finished"))
    assert finished["dbt_cloud_run_id"] == 831 and finished["status"] == "rejected_rows", finished["message"]
    assert proc.returncode == 0, rest[-2000:]
    text = json.dumps(lines)
    assert WEBHOOK_SECRET not in text and cloud.token not in text


def _wait_for_listening(proc, lines: list[dict]) -> str:
    found = _read_until(proc, lines, lambda line: "Uvicorn running on" in line["message"])
    port = re.search(r"http://127\.0\.0\.1:(\d+)", found["message"]).group(1)
    return f"http://127.0.0.1:{port}"


def _read_until(proc, lines: list[dict], predicate, timeout: float = 120) -> dict:
    """Read the service's JSON log lines (stderr) until one matches."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = proc.stderr.readline()
        if not raw:
            raise AssertionError(f"the service exited ({proc.poll()}); its log: {lines[-20:]}")
        if not raw.startswith("{"):
            continue
        line = json.loads(raw)
        lines.append(line)
        if predicate(line):
            return line
    raise AssertionError(f"timed out; the service's log: {lines[-20:]}")
