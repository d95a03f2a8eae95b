"""The webhook service end to end, over loopback: dbt Cloud (the stand-in) signs and sends deliveries,
the service fetches the run's artifacts from the stand-in's Admin API, and the real runner syncs the
sample project's models from its DuckDB warehouse into the Emarsys emulator."""

from __future__ import annotations

import json
import re
import time

import httpx

from tests.integration.cloud.standin import WebhookSender, build_steps, webhook_event

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def emulator_contacts(emu) -> list[dict]:
    return httpx.get(f"{emu.url}/_emulator/contacts").json()


def model_emails(project, model: str = "emarsys_contacts") -> set[str]:
    """The model's valid email keys, normalised as the sync does (read before the service opens the file)."""
    import duckdb

    con = duckdb.connect(str(project / "target" / "sample_shop.duckdb"), read_only=True)
    try:
        emails = [r[0] for r in con.execute(f"select email from main.{model}").fetchall()]
    finally:
        con.close()
    normalized = {e.strip().lower() for e in emails}
    return {e for e in normalized if EMAIL.match(e)}


def wait_for(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_signed_completion_syncs_the_run_once(cloud, build_artifacts, start_service, emulator, cloud_project):
    run = cloud.add_run(101, artifacts=build_artifacts.for_run())
    expected_emails = model_emails(cloud_project)   # before the service holds the DuckDB file
    service = start_service()
    event = webhook_event(run, cloud.account_id)
    body = json.dumps(event).encode()

    first = service.sender.send(body)
    assert first.status_code == 202, first.text
    assert first.json() == {"status": "accepted", "run_id": 101}
    service.wait_idle()
    # dbt Cloud retries a delivery it thinks failed: the very same body and signature.
    retried = service.sender.send(body)
    assert retried.status_code == 200 and retried.json()["status"] == "duplicate"
    service.wait_idle()

    assert service.processed() == [(101, "rejected_rows")]   # the sample's invalid emails
    # The build step's artifacts (step 4), never the docs step's, each downloaded once.
    downloads = [(r["path"].rsplit("/", 1)[-1], r["query"].get("step")) for r in cloud.artifact_requests()]
    assert downloads == [("manifest.json", "4"), ("run_results.json", "4")]
    run_lookups = [r for r in cloud.requests if r["path"].endswith("/runs/101/")]
    assert len(run_lookups) == 1
    assert run_lookups[0]["authorization_scheme"] == "Token"
    assert json.loads(run_lookups[0]["query"]["include_related"]) == ["run_steps", "job"]

    contacts = emulator_contacts(emulator)
    assert {c["3"] for c in contacts} == expected_emails
    run_dir = cloud_project / "target" / "dbt_cloud" / "run-101"
    report = json.loads((run_dir / "emarsys_sync_results.json").read_text())
    # Both syncs upsert contacts (the VIP mirror upserts its members first), concurrently, so which
    # one creates a given contact varies; together they created each contact exactly once.
    assert sum(r["created"] for r in report["results"]) == len(contacts)
    contacts_result = next(r for r in report["results"] if r["name"] == "shop_contacts")
    assert contacts_result["acknowledged"] == len(contacts)
    assert [row["status"] for row in service.ledger.rows()] == ["rejected_rows"]
    assert service.ledger.rows()[0]["run_id"] == 101 and service.ledger.rows()[0]["attempts"] == 1


def test_a_restarted_service_does_not_sync_a_run_again(cloud, build_artifacts, start_service):
    run = cloud.add_run(102, artifacts=build_artifacts.for_run())
    body = json.dumps(webhook_event(run, cloud.account_id)).encode()
    first = start_service()
    assert first.sender.send(body).status_code == 202
    first.wait_idle()
    assert first.processed() == [(102, "rejected_rows")]
    first.stop()
    downloads_before = len(cloud.artifact_requests())

    second = start_service()
    # This process has not seen run 102: it acknowledges, then the ledger says it was handled.
    assert second.sender.send(body).status_code == 202
    second.wait_idle()
    assert second.processed() == [(102, "not_synced")]
    assert len(cloud.artifact_requests()) == downloads_before
    assert [(row["run_id"], row["status"], row["attempts"]) for row in second.ledger.rows()] == \
        [(102, "rejected_rows", 1)]


def test_deliveries_that_must_not_sync_trigger_nothing(cloud, build_artifacts, start_service, emulator):
    allowed = cloud.add_run(201, job_id=7, artifacts=build_artifacts.for_run())
    other_job = cloud.add_run(202, job_id=8, artifacts=build_artifacts.for_run())
    errored = cloud.add_run(203, job_id=7, status=20, steps=build_steps(build_status=20),
                            artifacts=build_artifacts.for_run())
    cancelled = cloud.add_run(204, job_id=7, status=30, artifacts=build_artifacts.for_run())
    service = start_service({"DBT_CLOUD_JOB_IDS": "7", "DBT_CLOUD_ENVIRONMENT_IDS": "70"})
    send = service.sender.send
    body = json.dumps(webhook_event(allowed, cloud.account_id)).encode()

    bad_signature = send(body, signature=service.sender.sign(body + b" "))
    assert bad_signature.status_code == 401
    assert send(body, sign=False).status_code == 401
    assert send(body, signature="").status_code == 401
    forged = send(body, signature=WebhookSender(service.sender.url, "not-the-secret").sign(body))
    assert forged.status_code == 401

    ignored = {
        "job not in DBT_CLOUD_JOB_IDS": webhook_event(other_job, cloud.account_id),
        "errored run": webhook_event(errored, cloud.account_id),
        "cancelled run": webhook_event(cancelled, cloud.account_id),
        "run started": webhook_event(allowed, cloud.account_id, event_type="job.run.started"),
        "errored event": webhook_event(errored, cloud.account_id, event_type="job.run.errored"),
        "another account": webhook_event(allowed, cloud.account_id + 1),
        "another environment": _with_data(webhook_event(allowed, cloud.account_id), environmentId="71"),
    }
    for what, event in ignored.items():
        response = send(event)
        assert response.status_code == 200, (what, response.text)
        assert response.json()["status"] == "ignored", what

    malformed = send(b'{"eventType": "job.run.completed", "data": ')
    assert malformed.status_code == 400
    not_an_object = send(b'["job.run.completed"]')
    assert not_an_object.status_code == 400
    too_big = send(b'{"pad": "' + b"x" * (300 * 1024) + b'"}')
    assert too_big.status_code == 413

    service.wait_idle()
    assert service.processed() == []
    assert cloud.requests == []                       # not even the run was looked up
    assert emulator_contacts(emulator) == []


def test_an_unknown_run_is_reported_and_syncs_nothing(cloud, cloud_project, start_service, emulator):
    service = start_service()
    ghost = cloud.add_run(301)
    del cloud.runs[301]   # dbt Cloud says the run doesn't exist (deleted, or another account's)
    assert service.sender.send(webhook_event(ghost, cloud.account_id)).status_code == 202
    service.wait_idle()
    [processed] = service.service.worker.processed
    assert (processed.run_id, processed.status) == (301, "error")
    assert "dbt Cloud has no run 301" in processed.message
    assert emulator_contacts(emulator) == []
    assert [(r["run_id"], r["status"]) for r in service.ledger.rows()] == [(301, "error")]


def test_api_reports_an_errored_run_even_if_the_delivery_said_success(cloud, build_artifacts, start_service,
                                                                      emulator):
    """The Admin API is the authority: a delivery can't make the service sync a failed run."""
    run = cloud.add_run(302, status=20, steps=build_steps(build_status=20),
                        artifacts=build_artifacts.for_run())
    event = webhook_event(run, cloud.account_id)
    event["data"].update(runStatus="Success", runStatusCode=10)
    service = start_service()
    assert service.sender.send(event).status_code == 202
    service.wait_idle()
    [processed] = service.service.worker.processed
    assert processed.status == "not_synced" and "the run failed" in processed.message
    assert cloud.artifact_requests() == []
    assert emulator_contacts(emulator) == []


def test_artifact_failures_are_retried(cloud, build_artifacts, start_service, emulator):
    run = cloud.add_run(401, artifacts=build_artifacts.for_run())
    cloud.fail("artifacts/manifest.json", status=503, count=2)
    service = start_service()
    assert service.sender.send(webhook_event(run, cloud.account_id)).status_code == 202
    service.wait_idle()
    assert service.processed() == [(401, "rejected_rows")]
    manifest_requests = [r for r in cloud.artifact_requests() if r["path"].endswith("manifest.json")]
    assert len(manifest_requests) == 3
    assert emulator_contacts(emulator)


def test_artifact_failures_that_outlast_the_retries_are_reported(cloud, build_artifacts, start_service,
                                                                  emulator):
    run = cloud.add_run(402, artifacts=build_artifacts.for_run())
    cloud.fail("artifacts/run_results.json", status=502, count=1000)
    service = start_service()
    assert service.sender.send(webhook_event(run, cloud.account_id)).status_code == 202
    service.wait_idle()
    [processed] = service.service.worker.processed
    assert processed.status == "failed"
    assert "gave up after retries" in processed.message and "run_results.json of run 402" in processed.message
    assert "HTTP 502" in processed.message
    assert len([r for r in cloud.artifact_requests() if r["path"].endswith("run_results.json")]) == 3
    assert emulator_contacts(emulator) == []
    assert [(r["run_id"], r["status"]) for r in service.ledger.rows()] == [(402, "failed")]
    assert "gave up after retries" in service.ledger.rows()[0]["message"]


def test_answers_health_checks_and_deliveries_while_a_sync_runs(cloud, build_artifacts, start_service):
    first = cloud.add_run(501, artifacts=build_artifacts.for_run())
    second = cloud.add_run(502, artifacts=build_artifacts.for_run())
    gate = cloud.hold("/runs/501/artifacts/manifest.json")
    service = start_service()
    try:
        assert service.sender.send(webhook_event(first, cloud.account_id)).status_code == 202
        wait_for(lambda: any("/runs/501/artifacts/" in r["path"] for r in cloud.requests),
                 what="the first sync to reach its artifact download")

        health = service.healthz()
        assert health.status_code == 200
        assert health.json()["status"] == "ok" and health.json()["running_run_id"] == 501
        accepted = service.sender.send(webhook_event(second, cloud.account_id))
        assert accepted.status_code == 202
        assert service.healthz().json()["queued"] == 1
        assert not gate.is_set()     # all of the above was answered while the first sync was held
    finally:
        gate.set()
    service.wait_idle()
    assert service.processed() == [(501, "rejected_rows"), (502, "rejected_rows")]


def test_after_failed_runs_only_models_that_succeeded_are_synced(cloud, build_artifacts, start_service,
                                                                  emulator, cloud_project):
    failed_contacts = build_artifacts.run_results_with({"emarsys_contacts": "error"})
    run = cloud.add_run(601, status=20, steps=build_steps(build_status=20),
                        artifacts=build_artifacts.for_run(failed_contacts))
    vip_emails = model_emails(cloud_project, "vip_customers")
    service = start_service({"DBT_CLOUD_SYNC_AFTER_FAILED_RUNS": "true"})
    assert service.sender.send(webhook_event(run, cloud.account_id)).status_code == 202
    service.wait_idle()
    assert [p.run_id for p in service.service.worker.processed] == [601]
    report = json.loads((service.service.request.dbt_args().resolved_project_dir() / "target" / "dbt_cloud"
                         / "run-601" / "emarsys_sync_results.json").read_text())
    by_name = {r["name"]: r for r in report["results"]}
    # The model whose build failed is skipped, with the reason; the one that built is synced.
    assert by_name["shop_contacts"]["status"] == "skipped" and by_name["shop_contacts"]["sent"] == 0
    assert "failed" in by_name["shop_contacts"]["message"]
    assert by_name["vip_list"]["status"] != "skipped"
    assert {c.get("3") for c in emulator_contacts(emulator)} <= vip_emails   # no other customer


def _with_data(event: dict, **data) -> dict:
    event["data"].update(data)
    return event



def test_a_full_queue_turns_deliveries_away_for_dbt_cloud_to_retry(cloud, build_artifacts, start_service):
    runs = [cloud.add_run(run_id, artifacts=build_artifacts.for_run()) for run_id in (1001, 1002, 1003)]
    gate = cloud.hold("/runs/1001/artifacts/manifest.json")
    service = start_service(queue_size=1)
    try:
        assert service.sender.send(webhook_event(runs[0], cloud.account_id)).status_code == 202
        wait_for(lambda: any("/runs/1001/artifacts/" in r["path"] for r in cloud.requests),
                 what="the first sync to reach its artifact download")
        assert service.sender.send(webhook_event(runs[1], cloud.account_id)).status_code == 202
        turned_away = service.sender.send(webhook_event(runs[2], cloud.account_id))
        assert turned_away.status_code == 503 and turned_away.headers["retry-after"] == "60"
    finally:
        gate.set()
    service.wait_idle()
    # dbt Cloud delivers it again later: now there is room.
    assert service.sender.send(webhook_event(runs[2], cloud.account_id)).status_code == 202
    service.wait_idle()
    assert [run_id for run_id, _ in service.processed()] == [1001, 1002, 1003]


def test_runs_left_unfinished_by_a_stopped_service_are_synced_at_the_next_start(
        cloud, build_artifacts, cloud_project, start_service):
    from dbt_emarsys_sync.cloud.ledger import WarehouseDeliveryLedger
    from dbt_emarsys_sync.cloud.worker import Delivery
    from dbt_emarsys_sync.runner import RunRequest

    cloud.add_run(1101, artifacts=build_artifacts.for_run())
    earlier = WarehouseDeliveryLedger(RunRequest(project_dir=str(cloud_project),
                                                 profiles_dir=str(cloud_project)).dbt_args())
    earlier.open()
    earlier.claim(Delivery(run_id=1101, job_id=7))    # queued, then the process stopped
    earlier.claim(Delivery(run_id=1102, job_id=7))    # interrupted three times already
    for _ in range(3):
        earlier.started(1102)

    service = start_service()
    wait_for(lambda: len(service.service.worker.processed) == 2, timeout=120, what="both runs handled")
    assert sorted(service.processed()) == [(1101, "rejected_rows"), (1102, "abandoned")]
    assert {r["run_id"]: (r["status"], r["attempts"]) for r in service.ledger.rows()} == {
        1101: ("rejected_rows", 1), 1102: ("abandoned", 3)}
