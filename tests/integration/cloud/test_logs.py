"""The service's logs: JSON lines, the dbt Cloud run id on every line about a run, no secrets."""

from __future__ import annotations

import io
import json
import logging
import threading
from contextlib import contextmanager

from dbt_emarsys_sync.cloud.logs import REDACTED, RunLogContext, configure
from tests.integration.cloud.conftest import WEBHOOK_SECRET
from tests.integration.cloud.standin import webhook_event


@contextmanager
def captured_logs(context: RunLogContext, fmt: str = "json", secrets=()):
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure(context, fmt=fmt, level="info", secrets=secrets, stream=stream)
        yield stream
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


def test_every_line_about_a_delivery_carries_its_run_id_and_no_secret(cloud, cloud_project, start_service,
                                                                      monkeypatch):
    monkeypatch.setenv("EMARSYS_CLIENT_SECRET", "emarsys-client-secret-value")
    context = RunLogContext()
    with captured_logs(context, secrets=[WEBHOOK_SECRET, cloud.token]) as stream:
        service = start_service(log_context=context)
        ignored = cloud.add_run(701, status=30)
        missing = cloud.add_run(702)
        del cloud.runs[702]                              # the worker's lookup fails and is reported
        assert service.sender.send(webhook_event(ignored, cloud.account_id)).status_code == 200
        assert service.sender.send(webhook_event(missing, cloud.account_id)).status_code == 202
        service.wait_idle()
        service.stop()
        logging.getLogger("tests").info("a line mentioning %s and %s", WEBHOOK_SECRET, cloud.token)
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"time", "level", "logger", "message", "dbt_cloud_run_id"} <= set(line) for line in lines)

    about_701 = [line for line in lines if "701" in line["message"]]
    about_702 = [line for line in lines if "702" in line["message"]]
    assert about_701 and about_702
    assert {line["dbt_cloud_run_id"] for line in about_701} == {701}
    assert {line["dbt_cloud_run_id"] for line in about_702} == {702}
    # The worker's lines for run 702 (the sync started, then failed) all carry it.
    worker_lines = [line for line in lines if line["logger"] == "dbt_emarsys_sync.cloud.worker"]
    assert worker_lines and {line["dbt_cloud_run_id"] for line in worker_lines} == {702}
    ignored_line = next(line for line in about_701
                        if line["message"].startswith("ignored job.run.completed of run 701"))
    assert ignored_line["http_status"] == 200 and ignored_line["job_id"] == 7

    for secret in (WEBHOOK_SECRET, cloud.token, "emarsys-client-secret-value"):
        assert secret not in text
    assert lines[-1]["message"] == f"a line mentioning {REDACTED} and {REDACTED}"


def test_helper_threads_of_a_sync_log_its_run_id_but_the_event_loop_does_not():
    context = RunLogContext()
    with captured_logs(context, fmt="text") as stream:
        context.mark_event_loop_thread()      # this thread plays the server's event loop
        log = logging.getLogger("tests.sync")

        def sync():
            with context.syncing(901):
                helper = threading.Thread(target=lambda: log.info("from a helper thread"))
                helper.start()
                helper.join()

        worker = threading.Thread(target=sync)
        worker.start()
        worker.join()
        log.info("from the event loop")
    first, second = stream.getvalue().splitlines()
    assert "[dbt_cloud_run_id=901] from a helper thread" in first
    assert "[dbt_cloud_run_id=-] from the event loop" in second
