"""The dbt Cloud Admin API (v2) client: runs, their steps, and their artifacts.

    with AdminApiClient(AdminApiSettings.from_env()) as api:
        run = api.get_run(12345)
        api.download_artifact(run.id, "manifest.json", step=4, dest=Path("manifest.json"))

Every request goes through one retry loop; `_classify` is the one place that decides between success,
retry and failure. Timeouts, connection errors, 429 and 5xx are retried with backoff; the rest fail at
once with a message that says what to fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import stamina

from .. import __version__
from .errors import CloudApiError, CloudAuthError, CloudNotFound, CloudUnavailable
from .settings import AdminApiSettings

log = logging.getLogger(__name__)

# Run and step status codes (Admin API v2).
QUEUED, STARTING, RUNNING, SUCCESS, ERROR, CANCELLED = 1, 2, 3, 10, 20, 30
STATUS_NAMES = {QUEUED: "Queued", STARTING: "Starting", RUNNING: "Running", SUCCESS: "Success",
                ERROR: "Error", CANCELLED: "Cancelled"}
COMPLETE = (SUCCESS, ERROR, CANCELLED)
INCLUDE_RELATED = '["run_steps","job"]'

# The dbt command of a step: "Invoke dbt with `dbt build --select marts`" -> "dbt build --select marts".
_COMMAND_IN_NAME = re.compile(r"`([^`]*)`")
_DBT_VERB = re.compile(r"^dbt\s+(?:--?\S+\s+)*([a-z][a-z-]*)")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    timeout_seconds: float = 300.0     # total time one request may spend retrying
    wait_initial: float = 1.0
    wait_max: float = 30.0


@dataclass(frozen=True)
class RunStep:
    index: int
    name: str
    status: int

    @property
    def command(self) -> str:
        """The dbt command this step ran ("" for clone/profile/docs steps that name none)."""
        found = _COMMAND_IN_NAME.search(self.name)
        text = (found.group(1) if found else self.name).strip()
        return text if text.startswith("dbt ") else ""

    @property
    def verb(self) -> str:
        """`build`, `run`, `test`, `seed`, `snapshot`, `docs`, `run-operation`, ... or ""."""
        found = _DBT_VERB.match(self.command)
        return found.group(1) if found else ""


@dataclass(frozen=True)
class DbtCloudRun:
    id: int
    account_id: int | None
    job_id: int | None
    job_name: str
    environment_id: int | None
    project_id: int | None
    status: int
    status_message: str
    finished_at: str | None
    steps: tuple[RunStep, ...] = field(default_factory=tuple)

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, f"status {self.status}")

    @property
    def is_complete(self) -> bool:
        return self.status in COMPLETE

    def summary(self) -> dict[str, Any]:
        """What is kept next to the downloaded artifacts (nothing from the job's settings)."""
        return {"run_id": self.id, "account_id": self.account_id, "job_id": self.job_id,
                "job_name": self.job_name, "environment_id": self.environment_id,
                "project_id": self.project_id, "status": self.status, "status_name": self.status_name,
                "finished_at": self.finished_at,
                "steps": [{"index": s.index, "name": s.name, "status": s.status} for s in self.steps]}

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> "DbtCloudRun":
        job = data.get("job") or {}
        steps = tuple(sorted((RunStep(index=int(s["index"]), name=str(s.get("name") or ""),
                                      status=int(s.get("status") or 0))
                              for s in data.get("run_steps") or [] if s.get("index") is not None),
                             key=lambda s: s.index))
        return cls(id=int(data["id"]), account_id=_opt_int(data.get("account_id")),
                   job_id=_opt_int(data.get("job_definition_id") or data.get("job_id")),
                   job_name=str(job.get("name") or ""),
                   environment_id=_opt_int(data.get("environment_id")),
                   project_id=_opt_int(data.get("project_id")),
                   status=int(data.get("status") or 0),
                   status_message=str(data.get("status_message") or ""),
                   finished_at=data.get("finished_at"), steps=steps)


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class AdminApiClient:
    def __init__(self, settings: AdminApiSettings, *, transport: httpx.BaseTransport | None = None,
                 retry: RetryPolicy | None = None):
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=settings.account_base + "/",
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_seconds, connect=15.0),
            headers={"Authorization": f"Token {settings.token}", "Accept": "application/json",
                     "User-Agent": f"dbt-emarsys-sync/{__version__}"},
            follow_redirects=True,
        )
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"AdminApiClient(url={self.settings.url!r}, account_id={self.settings.account_id})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AdminApiClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- endpoints ----------------------------------------------------------------------------

    def get_run(self, run_id: int) -> DbtCloudRun:
        data = self._get_json(f"runs/{run_id}/", {"include_related": INCLUDE_RELATED},
                              what=f"run {run_id}")
        return DbtCloudRun.from_api(data)

    def latest_completed_run(self, job_id: int, look_back: int = 100) -> DbtCloudRun:
        """The newest run of the job that has finished (successfully or not): a run still in progress
        has no final artifacts."""
        page = 20
        for offset in range(0, look_back, page):
            runs = self._get_json("runs/", {"job_definition_id": job_id, "order_by": "-id", "limit": page,
                                            "offset": offset, "include_related": INCLUDE_RELATED},
                                  what=f"runs of job {job_id}")
            if not isinstance(runs, list):
                raise CloudApiError(f"dbt Cloud answered the run list of job {job_id} with something "
                                    "that is not a list")
            for data in runs:
                run = DbtCloudRun.from_api(data)
                if run.is_complete:
                    return run
            if len(runs) < page:
                break
        raise CloudNotFound(f"job {job_id} has no finished run in account {self.settings.account_id} "
                            f"(looked at its last {look_back} runs)")

    def download_artifact(self, run_id: int, path: str, step: int, dest: Path) -> int:
        """Stream one artifact of one step to `dest` (written atomically); return its size in bytes."""
        what = f"{path} of run {run_id} (step {step})"
        tmp = dest.with_name(dest.name + ".part")
        for attempt in self._attempts():
            with attempt:
                self.requests_sent += 1
                try:
                    with self._http.stream("GET", f"runs/{run_id}/artifacts/{path}",
                                           params={"step": step}) as response:
                        if response.status_code != 200:
                            response.read()
                            self._classify(response, what)
                        size = 0
                        with open(tmp, "wb") as out:
                            for chunk in response.iter_bytes(1 << 20):
                                out.write(chunk)
                                size += len(chunk)
                except httpx.TimeoutException as exc:
                    raise _Retry(f"GET {what}: timed out ({type(exc).__name__})") from None
                except httpx.TransportError as exc:
                    raise _Retry(f"GET {what}: connection error ({type(exc).__name__})") from None
                os.replace(tmp, dest)
                return size
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the request loop ---------------------------------------------------------------------

    def _get_json(self, path: str, params: dict[str, Any], what: str) -> Any:
        for attempt in self._attempts():
            with attempt:
                self.requests_sent += 1
                try:
                    response = self._http.get(path, params=params)
                except httpx.TimeoutException as exc:
                    raise _Retry(f"GET {what}: timed out ({type(exc).__name__})") from None
                except httpx.TransportError as exc:
                    raise _Retry(f"GET {what}: connection error ({type(exc).__name__})") from None
                if response.status_code != 200:
                    self._classify(response, what)
                try:
                    body = response.json()
                except ValueError:
                    raise _Retry(f"GET {what}: HTTP 200 with a body that is not JSON") from None
                if not isinstance(body, dict) or "data" not in body:
                    raise CloudApiError(f"dbt Cloud answered GET {what} without a `data` field")
                return body["data"]
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempts(self):
        attempts = stamina.retry_context(on=self._backoff_hook, attempts=self.retry.attempts,
                                         timeout=self.retry.timeout_seconds,
                                         wait_initial=self.retry.wait_initial, wait_max=self.retry.wait_max)
        return _ReportingAttempts(attempts)

    @staticmethod
    def _backoff_hook(exc: Exception) -> bool | float:
        if not isinstance(exc, _Retry):
            return False
        log.warning("dbt Cloud API: %s; retrying", exc.reason)
        return exc.wait if exc.wait is not None else True

    def _classify(self, response: httpx.Response, what: str) -> None:
        """Raise the right error for a non-200 answer."""
        status = response.status_code
        message = _api_message(response)
        detail = f": {message}" if message else ""
        if status == 429:
            raise _Retry(f"GET {what}: HTTP 429 rate limited", wait=_retry_after(response))
        if status >= 500:
            raise _Retry(f"GET {what}: HTTP {status}{detail}")
        if status == 401:
            raise CloudAuthError(f"dbt Cloud rejected the API token (HTTP 401{detail}); check "
                                 "DBT_CLOUD_API_TOKEN and DBT_CLOUD_URL (the account's access URL)")
        if status == 403:
            raise CloudAuthError(f"the dbt Cloud API token may not read {what} (HTTP 403{detail}); "
                                 "use a service token with the "
                                 "'Job Viewer' (or 'Read-only') permission on this project")
        if status == 404:
            raise CloudNotFound(f"dbt Cloud has no {what} in account {self.settings.account_id} "
                                f"(HTTP 404{detail})")
        raise CloudApiError(f"dbt Cloud answered GET {what} with HTTP {status}{detail}")


class _ReportingAttempts:
    """Wraps stamina's attempts: when the retries run out, raise CloudUnavailable with the last reason."""

    def __init__(self, attempts):
        self._attempts = attempts

    def __iter__(self):
        try:
            for attempt in self._attempts:
                yield attempt
        except _Retry as exc:
            message = f"dbt Cloud API unavailable: gave up after retries: {exc.reason}"
            raise CloudUnavailable(message) from None


def _api_message(response: httpx.Response) -> str:
    """dbt Cloud's own explanation (`status.user_message`), short, or ""."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        status = body.get("status")
        if isinstance(status, dict):
            text = status.get("user_message") or status.get("developer_message") or ""
            return " ".join(str(text).split())[:200]
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return min(max(float(raw), 0.0), 120.0) if raw else None
    except ValueError:
        return None


def _opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
