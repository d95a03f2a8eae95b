"""dbt Cloud webhook deliveries: the signature, the event, and whether it should start a sync.

dbt Cloud signs each delivery: the `Authorization` header is the hex HMAC-SHA256 of the raw request
body, keyed with the webhook's secret. The body must be hashed exactly as received (re-serialised JSON
would not match), so verification happens before the body is parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from .api import CANCELLED, ERROR, STATUS_NAMES, SUCCESS
from .settings import RunPolicy

COMPLETED = "job.run.completed"
RUN_STATUS_BY_NAME = {"success": SUCCESS, "succeeded": SUCCESS, "errored": ERROR, "error": ERROR,
                      "failed": ERROR, "cancelled": CANCELLED, "canceled": CANCELLED}


class MalformedDelivery(ValueError):
    """The body is not a dbt Cloud webhook event (answered with 400)."""


def signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """True when `header` is the body's signature. Constant-time; case of the hex digits is ignored."""
    if not header or not secret:
        return False
    expected = signature(body, secret)
    return hmac.compare_digest(expected.encode("ascii"), header.strip().lower().encode("ascii", "replace"))


@dataclass(frozen=True)
class WebhookEvent:
    event_type: str
    event_id: str
    account_id: int | None
    run_id: int | None
    job_id: int | None
    job_name: str
    environment_id: int | None
    project_id: int | None
    run_status: int | None        # 10 Success, 20 Error, 30 Cancelled (None when not given)
    run_status_text: str

    @property
    def run_status_name(self) -> str:
        if self.run_status is None:
            return self.run_status_text or "unknown"
        return STATUS_NAMES.get(self.run_status, self.run_status_text or f"status {self.run_status}")

    def log_fields(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "event_id": self.event_id, "job_id": self.job_id,
                "environment_id": self.environment_id, "run_status": self.run_status_name}


def parse_event(body: bytes) -> WebhookEvent:
    """Parse a delivery's body; raise MalformedDelivery with the reason when it isn't one."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedDelivery(f"the body is not JSON ({exc})") from None
    except RecursionError:
        raise MalformedDelivery("the body is not a delivery (JSON nested too deeply)") from None
    if not isinstance(payload, dict):
        raise MalformedDelivery("the body is not a JSON object")
    event_type = payload.get("eventType")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedDelivery("the body has no eventType")
    data = payload.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MalformedDelivery("`data` is not an object")
    run_id = _int_field(data, "runId")
    if event_type.startswith("job.run.") and run_id is None:
        raise MalformedDelivery(f"a {event_type} event without data.runId")
    status_text = str(data.get("runStatus") or "")
    status = _int_field(data, "runStatusCode")
    if status is None and status_text:
        status = RUN_STATUS_BY_NAME.get(status_text.lower())
    return WebhookEvent(
        event_type=event_type, event_id=str(payload.get("eventId") or ""),
        account_id=_int_field(payload, "accountId"), run_id=run_id, job_id=_int_field(data, "jobId"),
        job_name=str(data.get("jobName") or ""), environment_id=_int_field(data, "environmentId"),
        project_id=_int_field(data, "projectId"), run_status=status, run_status_text=status_text,
    )


@dataclass(frozen=True)
class Decision:
    act: bool
    reason: str


def decide(event: WebhookEvent, policy: RunPolicy, account_id: int) -> Decision:
    """Whether this delivery should start a sync; the reason is logged and returned to dbt Cloud."""
    if event.event_type != COMPLETED:
        return Decision(False, f"event {event.event_type} is not acted on (only {COMPLETED})")
    if event.account_id is None:
        return Decision(False, "the delivery names no accountId")
    if event.account_id != account_id:
        return Decision(False, f"account {event.account_id} is not this service's account "
                               f"(DBT_CLOUD_ACCOUNT_ID={account_id})")
    return decide_run(event.job_id, event.environment_id, event.run_status, policy,
                      status_name=event.run_status_name)


def decide_run(job_id: int | None, environment_id: int | None, status: int | None, policy: RunPolicy,
               *, status_name: str = "", apply_allow_lists: bool = True) -> Decision:
    """The policy, on the facts of one run. Used on the delivery, and again on the run as the Admin API
    reports it (the authoritative source) before anything is synced."""
    if apply_allow_lists and policy.job_ids and job_id not in policy.job_ids:
        return Decision(False, f"job {job_id} is not in DBT_CLOUD_JOB_IDS")
    if apply_allow_lists and policy.environment_ids and environment_id not in policy.environment_ids:
        return Decision(False, f"environment {environment_id} is not in DBT_CLOUD_ENVIRONMENT_IDS")
    name = status_name or STATUS_NAMES.get(status or 0, f"status {status}")
    if status == SUCCESS:
        return Decision(True, "the run succeeded")
    if status == ERROR:
        if policy.sync_after_failed_runs:
            return Decision(True, "the run failed; syncing only the models that succeeded "
                                  "(DBT_CLOUD_SYNC_AFTER_FAILED_RUNS)")
        return Decision(False, "the run failed (set DBT_CLOUD_SYNC_AFTER_FAILED_RUNS=true to sync the "
                               "models that succeeded)")
    if status == CANCELLED:
        return Decision(False, "the run was cancelled")
    return Decision(False, f"the run is not finished ({name})")


def _int_field(data: dict, key: str) -> int | None:
    """dbt Cloud sends ids inside `data` as strings and `accountId` as a number; accept both."""
    value = data.get(key)
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise MalformedDelivery(f"{key} is not a number: {str(value)[:40]!r}") from None
    # dbt Cloud's ids and status codes are positive; the ledger keeps run ids as 64-bit integers.
    if not 0 < number < 2 ** 63:
        raise MalformedDelivery(f"{key} is out of range: {str(value)[:40]!r}")
    return number
