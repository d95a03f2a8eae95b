"""The webhook receiver: `POST /webhooks/dbt-cloud` and `GET /healthz`, a Starlette app.

A delivery is checked in this order, and nothing is parsed before its signature is verified:
size (413) -> signature (401) -> JSON (400) -> policy (200, ignored) -> queue (202 accepted,
200 duplicate, 503 when the queue is full or the service is stopping, so dbt Cloud retries later).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..emarsys.errors import AuthError, EmarsysConfigError, PermissionDenied
from ..errors import ConfigError, SyncError
from .api import AdminApiClient, RetryPolicy
from .errors import RunNotSyncable
from .logs import RunLogContext
from .run import sync_dbt_cloud_run
from .settings import ServiceSettings
from .webhook import MalformedDelivery, decide, parse_event, verify_signature
from .worker import (
    ACCEPTED,
    BUSY,
    DUPLICATE,
    ERROR,
    FAILED,
    NOT_SYNCED,
    REJECTED_ROWS,
    SUCCESS,
    Delivery,
    DeliveryLedger,
    Outcome,
    SyncWorker,
)

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/dbt-cloud"
DEFAULT_MAX_BODY_BYTES = 256 * 1024   # dbt Cloud's events are about 1 KB
STATUS_BY_EXIT_CODE = {0: SUCCESS, 1: REJECTED_ROWS}


@dataclass(frozen=True)
class ServiceOptions:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    queue_size: int = 100
    max_attempts: int = 3               # syncs of one run interrupted by restarts
    shutdown_grace_seconds: float = 5.0


class WebhookService:
    """Builds the app and the worker. `request` is the runner's RunRequest (project, profile, target,
    selection) each sync starts from; `emarsys_settings`/`emarsys_transport` go to the runner,
    `api_transport`/`api_retry` to the Admin API client (tests point them at local stand-ins)."""

    def __init__(self, settings: ServiceSettings, request, ledger: DeliveryLedger, *,
                 options: ServiceOptions | None = None, log_context: RunLogContext | None = None,
                 emarsys_settings=None, emarsys_transport=None, api_transport=None,
                 api_retry: RetryPolicy | None = None):
        self.settings = settings
        self.request = request
        self.options = options or ServiceOptions()
        self.log_context = log_context or RunLogContext()
        self.emarsys_settings = emarsys_settings
        self.emarsys_transport = emarsys_transport
        self.api = AdminApiClient(settings.api, transport=api_transport, retry=api_retry)
        self.worker = SyncWorker(self._execute, ledger, self.log_context,
                                 queue_size=self.options.queue_size, max_attempts=self.options.max_attempts)
        self.app = Starlette(routes=[Route(WEBHOOK_PATH, self.webhook, methods=["POST"]),
                                     Route("/healthz", self.healthz, methods=["GET"])],
                             lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app):
        self.log_context.mark_event_loop_thread()
        self.worker.start()
        log.info("listening for dbt Cloud deliveries on %s (account %s)", WEBHOOK_PATH,
                 self.settings.api.account_id)
        try:
            yield
        finally:
            self.worker.stop(self.options.shutdown_grace_seconds)
            self.api.close()

    # -- routes -------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> JSONResponse:
        status = self.worker.status()
        healthy = status["worker_alive"]
        return JSONResponse({"status": "ok" if healthy else "worker stopped", **status},
                            status_code=200 if healthy else 503)

    async def webhook(self, request: Request) -> JSONResponse:
        body = await self._read_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not verify_signature(body, request.headers.get("authorization"), self.settings.webhook_secret):
            log.warning("rejected a delivery: %s signature", "missing" if not request.headers.get(
                "authorization") else "bad", extra={"client": _client(request), "http_status": 401})
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        try:
            event = parse_event(body)
        except MalformedDelivery as exc:
            log.warning("rejected a signed delivery: %s", exc, extra={"http_status": 400})
            return JSONResponse({"error": f"malformed delivery: {exc}"}, status_code=400)

        with self.log_context.run(event.run_id):
            decision = decide(event, self.settings.policy, self.settings.api.account_id)
            if not decision.act:
                log.info("ignored %s of run %s: %s", event.event_type, event.run_id, decision.reason,
                         extra={**event.log_fields(), "http_status": 200})
                return JSONResponse({"status": "ignored", "reason": decision.reason})
            assert event.run_id is not None  # parse_event guarantees it for job.run.* events
            result = self.worker.submit(Delivery(run_id=event.run_id, job_id=event.job_id,
                                                 environment_id=event.environment_id,
                                                 event_id=event.event_id))
            if result == ACCEPTED:
                log.info("accepted run %s of job %s (%s): %s", event.run_id, event.job_id,
                         event.job_name or "?", decision.reason,
                         extra={**event.log_fields(), "http_status": 202})
                return JSONResponse({"status": "accepted", "run_id": event.run_id}, status_code=202)
            if result == DUPLICATE:
                log.info("run %s was already accepted; a repeated delivery is not synced again",
                         event.run_id, extra={**event.log_fields(), "http_status": 200})
                return JSONResponse({"status": "duplicate", "run_id": event.run_id})
            reason = "the queue is full" if result == BUSY else "the service is stopping"
            log.warning("turned away run %s: %s", event.run_id, reason,
                        extra={**event.log_fields(), "http_status": 503})
            return JSONResponse({"error": reason}, status_code=503, headers={"Retry-After": "60"})

    async def _read_body(self, request: Request) -> bytes | JSONResponse:
        limit = self.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return JSONResponse({"error": "invalid Content-Length"}, status_code=400)
            if int(declared) > limit:
                return self._too_large(request)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return self._too_large(request)
        except ClientDisconnect:
            return JSONResponse({"error": "client disconnected"}, status_code=400)
        return bytes(body)

    def _too_large(self, request: Request) -> JSONResponse:
        log.warning("rejected a delivery over %d bytes", self.options.max_body_bytes,
                    extra={"client": _client(request), "http_status": 413})
        return JSONResponse({"error": f"body over {self.options.max_body_bytes} bytes"}, status_code=413)

    # -- the worker's side --------------------------------------------------------------------

    def _execute(self, delivery: Delivery) -> Outcome:
        from ..spec import SpecError

        try:
            result = sync_dbt_cloud_run(self.request, run_id=delivery.run_id, api=self.api,
                                        policy=self.settings.policy, apply_allow_lists=True,
                                        settings=self.emarsys_settings, transport=self.emarsys_transport)
        except RunNotSyncable as exc:
            return Outcome(NOT_SYNCED, str(exc))
        except SpecError as exc:
            return Outcome(ERROR, f"{len(exc.problems)} problem(s) in the sync declarations: "
                           + "; ".join(str(p) for p in exc.problems))
        except (ConfigError, EmarsysConfigError, AuthError, PermissionDenied) as exc:
            return Outcome(ERROR, str(exc))
        except SyncError as exc:
            return Outcome(FAILED, str(exc))
        report = result.report
        for sync in report.syncs:
            log.info("sync %s (model %s): %s%s", sync.name, sync.model, sync.status,
                     f": {sync.message}" if sync.message else "",
                     # (not "created": LogRecord has an attribute of that name)
                     extra={"sync": sync.name, "model": sync.model, "status": sync.status,
                            "rows_read": sync.rows_read, "sent": sync.sent,
                            "contacts_created": sync.created, "contacts_updated": sync.updated,
                            "rejected": sync.rejected})
        counts = ", ".join(f"{n} {s}" for s, n in _count(s.status for s in report.syncs).items())
        return Outcome(STATUS_BY_EXIT_CODE.get(report.exit_code_of_ran_syncs, FAILED),
                       f"{len(report.syncs)} sync(s): {counts}" if report.syncs else "no sync ran")


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"
