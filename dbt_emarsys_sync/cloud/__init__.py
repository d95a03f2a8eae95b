"""Running syncs after dbt Cloud jobs: the Admin API client (runs, steps, artifacts), the webhook
receiver (signature, event policy, background worker, delivery ledger) and the artifact-driven run
shared by `serve` and `run --dbt-cloud-run-id`.

dbt Cloud jobs can only run dbt commands, so the sync runs outside dbt Cloud: dbt Cloud calls the
service's webhook when a job finishes, and the service fetches that run's manifest and run results.
"""

from .api import AdminApiClient, DbtCloudRun, RetryPolicy, RunStep
from .run import CloudSyncOutcome, sync_dbt_cloud_run
from .settings import AdminApiSettings, RunPolicy, ServiceSettings
from .webhook import parse_event, signature, verify_signature

__all__ = ["AdminApiClient", "AdminApiSettings", "CloudSyncOutcome", "DbtCloudRun", "RetryPolicy",
           "RunPolicy", "RunStep", "ServiceSettings", "parse_event", "signature", "sync_dbt_cloud_run",
           "verify_signature"]
