"""Fixtures for the dbt Cloud tests: the dbt Cloud stand-in, the sample project's build artifacts served
as a dbt Cloud run's, and the webhook service on a loopback port, syncing into the Emarsys emulator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dbt_emarsys_sync.cloud.api import RetryPolicy
from dbt_emarsys_sync.cloud.service import WEBHOOK_PATH, ServiceOptions, WebhookService
from dbt_emarsys_sync.cloud.settings import ServiceSettings
from dbt_emarsys_sync.emarsys import EmarsysSettings
from dbt_emarsys_sync.runner import RunRequest
from tests.conftest import emulator_env
from tests.integration.cloud.standin import DbtCloudStandin, ServerThread, WebhookSender

WEBHOOK_SECRET = "whsec-standin-5f1c8e0d9b7a"
# Short waits: the retry behaviour is the same, the tests just don't sit through real backoff.
FAST_RETRY = RetryPolicy(attempts=3, timeout_seconds=20, wait_initial=0.05, wait_max=0.2)


@pytest.fixture
def cloud():
    with DbtCloudStandin() as standin:
        yield standin


@dataclass
class BuildArtifacts:
    manifest: bytes
    run_results: bytes

    def run_results_with(self, statuses: dict[str, str]) -> bytes:
        """The run results with some nodes' statuses changed ({"emarsys_contacts": "error"})."""
        data = json.loads(self.run_results)
        for result in data["results"]:
            name = result["unique_id"].split(".")[-1]
            if name in statuses:
                result["status"] = statuses[name]
        return json.dumps(data).encode()

    def for_run(self, run_results: bytes | None = None) -> dict[int, dict[str, bytes]]:
        """Artifacts per step, as dbt Cloud keeps them for `build_steps()`: the build (step 4), then
        `docs generate` (step 5), whose files must never be used for the sync."""
        return {4: {"manifest.json": self.manifest, "run_results.json": run_results or self.run_results},
                5: {"manifest.json": b'{"metadata": {"project_name": "docs-step"}, "nodes": {}}',
                    "run_results.json": b'{"results": [], "note": "docs generate"}'}}


@pytest.fixture
def cloud_project(sample_project, monkeypatch) -> Path:
    """The built sample project, as the service's checkout: its warehouse (DuckDB) is built, but its own
    target/ artifacts are gone, so a sync can only have used the dbt Cloud run's."""
    monkeypatch.setenv("SAMPLE_DUCKDB_PATH", str(sample_project / "target" / "sample_shop.duckdb"))
    _reset_dbt_adapters()
    return sample_project


@pytest.fixture
def build_artifacts(cloud_project) -> BuildArtifacts:
    target = cloud_project / "target"
    artifacts = BuildArtifacts((target / "manifest.json").read_bytes(),
                               (target / "run_results.json").read_bytes())
    (target / "manifest.json").unlink()
    (target / "run_results.json").unlink()
    return artifacts


def _reset_dbt_adapters() -> None:
    """dbt keeps one adapter per type per process; each test's project has its own DuckDB file."""
    from dbt.adapters.factory import reset_adapters

    reset_adapters()


@dataclass
class RunningService:
    service: WebhookService
    server: ServerThread
    sender: WebhookSender
    ledger: object    # cloud.ledger.WarehouseDeliveryLedger

    @property
    def url(self) -> str:
        return self.server.url

    def healthz(self) -> httpx.Response:
        return httpx.get(f"{self.url}/healthz", timeout=10)

    def wait_idle(self, timeout: float = 120) -> None:
        assert self.service.worker.wait_idle(timeout), "the worker did not finish in time"

    def processed(self) -> list[tuple[int, str]]:
        return [(p.run_id, p.status) for p in self.service.worker.processed]

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def start_service(cloud, cloud_project, emulator):
    """Start the webhook service (optionally with extra DBT_CLOUD_* settings); stopped after the test."""
    from dbt_emarsys_sync.cloud.ledger import WarehouseDeliveryLedger

    started: list[RunningService] = []

    def start(env: dict[str, str] | None = None, log_context=None, **options) -> RunningService:
        settings = ServiceSettings.from_env({**cloud.env(), "DBT_CLOUD_WEBHOOK_SECRET": WEBHOOK_SECRET,
                                             **(env or {})})
        request = RunRequest(project_dir=str(cloud_project), profiles_dir=str(cloud_project))
        ledger = WarehouseDeliveryLedger(request.dbt_args())
        service = WebhookService(settings, request, ledger, options=ServiceOptions(**options),
                                 log_context=log_context,
                                 emarsys_settings=EmarsysSettings.from_env(emulator_env(emulator)),
                                 api_retry=FAST_RETRY)
        server = ServerThread(service.app, name="dbt-cloud-webhook-service").start()
        running = RunningService(service, server, WebhookSender(server.url + WEBHOOK_PATH, WEBHOOK_SECRET),
                                 ledger)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()

