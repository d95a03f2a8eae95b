"""A local stand-in for dbt Cloud, for tests: the Admin API v2 endpoints the service uses (runs with their
steps, a job's runs, run artifacts per step) and a webhook sender that signs deliveries as dbt Cloud does.

    with DbtCloudStandin() as cloud:
        cloud.add_run(101, job_id=7, steps=build_steps(), artifacts={4: {"manifest.json": ...}})
        cloud.url, cloud.account_id, cloud.token     # for DBT_CLOUD_URL / _ACCOUNT_ID / _API_TOKEN
        cloud.fail("artifacts/manifest.json", status=503, count=2)    # transient failures
        gate = cloud.hold("artifacts/manifest.json")  # hold matching requests until gate.set()
        cloud.requests                                # what was asked, in order

It mirrors the documented shapes (`{"status": {...}, "data": ...}`, run `status` codes 1/2/3/10/20/30,
`run_steps[].index`, `?step=N` with the last step as default, `Authorization: Token <token>`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

STATUS_HUMANIZED = {1: "Queued", 2: "Starting", 3: "Running", 10: "Success", 20: "Error", 30: "Cancelled"}


def build_steps(*, build_status: int = 10, docs: bool = True, command: str = "dbt build") -> list[dict]:
    """The steps of a typical job: clone, profile, deps, the build, then (optionally) docs generate."""
    steps = [
        {"index": 1, "name": "Clone git repository", "status": 10},
        {"index": 2, "name": "Create profile from connection Warehouse", "status": 10},
        {"index": 3, "name": "Invoke dbt with `dbt deps`", "status": 10},
        {"index": 4, "name": f"Invoke dbt with `{command}`", "status": build_status},
    ]
    if docs:
        steps.append({"index": 5, "name": "Invoke dbt with `dbt docs generate`", "status": 10})
    return steps


@dataclass
class Fault:
    path: str
    status: int
    count: int


@dataclass
class StandinRun:
    id: int
    job_id: int
    environment_id: int
    project_id: int
    status: int
    steps: list[dict]
    artifacts: dict[int, dict[str, bytes]] = field(default_factory=dict)
    job_name: str = "Nightly build"


class DbtCloudStandin:
    def __init__(self, account_id: int = 4242, token: str = "standin-service-token"):
        self.account_id = account_id
        self.token = token
        self.runs: dict[int, StandinRun] = {}
        self.requests: list[dict] = []
        self._faults: list[Fault] = []
        self._holds: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        base = "/api/v2/accounts/{account_id:int}"
        self.app = Starlette(routes=[
            Route(base + "/runs/", self.list_runs, methods=["GET"]),
            Route(base + "/runs/{run_id:int}/", self.get_run, methods=["GET"]),
            Route(base + "/runs/{run_id:int}/artifacts/{path:path}", self.get_artifact, methods=["GET"]),
        ])
        self._server = ServerThread(self.app, name="dbt-cloud-standin", lifespan="off")

    @property
    def url(self) -> str:
        return self._server.url

    def env(self) -> dict[str, str]:
        return {"DBT_CLOUD_URL": self.url, "DBT_CLOUD_ACCOUNT_ID": str(self.account_id),
                "DBT_CLOUD_API_TOKEN": self.token}

    # -- set-up -------------------------------------------------------------------------------

    def add_run(self, run_id: int, *, job_id: int = 7, environment_id: int = 70, project_id: int = 700,
                status: int = 10, steps: list[dict] | None = None,
                artifacts: dict[int, dict[str, bytes]] | None = None) -> StandinRun:
        run = StandinRun(run_id, job_id, environment_id, project_id, status,
                         steps if steps is not None else build_steps(), artifacts or {})
        with self._lock:
            self.runs[run_id] = run
        return run

    def fail(self, path: str, status: int = 503, count: int = 1) -> None:
        """The next `count` requests whose path contains `path` answer `status`."""
        with self._lock:
            self._faults.append(Fault(path, status, count))

    def hold(self, path: str) -> threading.Event:
        """Requests whose path contains `path` wait until the returned event is set."""
        gate = threading.Event()
        with self._lock:
            self._holds[path] = gate
        return gate

    def artifact_requests(self) -> list[dict]:
        return [r for r in self.requests if "/artifacts/" in r["path"]]

    # -- routes -------------------------------------------------------------------------------

    async def get_run(self, request: Request) -> Response:
        denied = await self._admit(request)
        if denied:
            return denied
        run = self.runs.get(request.path_params["run_id"])
        if run is None:
            return _error(404, "Requested resource not found")
        return _ok(self._run_json(run, request.query_params.get("include_related", "")))

    async def list_runs(self, request: Request) -> Response:
        denied = await self._admit(request)
        if denied:
            return denied
        job = request.query_params.get("job_definition_id")
        runs = [r for r in self.runs.values() if job is None or str(r.job_id) == job]
        runs.sort(key=lambda r: r.id, reverse=request.query_params.get("order_by") == "-id")
        offset = int(request.query_params.get("offset", 0))
        limit = int(request.query_params.get("limit", 100))
        include = request.query_params.get("include_related", "")
        return _ok([self._run_json(r, include) for r in runs[offset:offset + limit]])

    async def get_artifact(self, request: Request) -> Response:
        denied = await self._admit(request)
        if denied:
            return denied
        run = self.runs.get(request.path_params["run_id"])
        if run is None:
            return _error(404, "Requested resource not found")
        # Without `step`, dbt Cloud answers with the last step's artifact.
        step = int(request.query_params.get("step") or max(s["index"] for s in run.steps))
        content = run.artifacts.get(step, {}).get(request.path_params["path"])
        if content is None:
            return _error(404, f"Artifact {request.path_params['path']} not found for step {step}")
        return Response(content, media_type="application/json")

    async def _admit(self, request: Request) -> Response | None:
        """Log the request, check the token, then apply holds and faults."""
        path = request.url.path
        auth = request.headers.get("authorization", "")
        with self._lock:
            self.requests.append({"path": path, "query": dict(request.query_params),
                                  "authorization_scheme": auth.split(" ", 1)[0]})
            gate = next((g for p, g in self._holds.items() if p in path), None)
        if request.path_params.get("account_id") != self.account_id:
            return _error(404, "Account not found")
        if auth not in (f"Token {self.token}", f"Bearer {self.token}"):
            return _error(401, "Invalid token.")
        if gate is not None:
            await asyncio.to_thread(gate.wait, 60)
        with self._lock:
            fault = next((f for f in self._faults if f.path in path and f.count > 0), None)
            if fault is not None:
                fault.count -= 1
        if fault is not None:
            return _error(fault.status, "Service temporarily unavailable")
        return None

    def _run_json(self, run: StandinRun, include_related: str) -> dict:
        data = {
            "id": run.id, "account_id": self.account_id, "job_definition_id": run.job_id,
            "environment_id": run.environment_id, "project_id": run.project_id, "status": run.status,
            "status_humanized": STATUS_HUMANIZED.get(run.status, "Unknown"),
            "status_message": None if run.status == 10 else "Some step failed",
            "is_complete": run.status in (10, 20, 30), "is_success": run.status == 10,
            "is_error": run.status == 20, "is_cancelled": run.status == 30,
            "finished_at": "2026-01-01 10:00:00.000000+00:00" if run.status in (10, 20, 30) else None,
            "artifacts_saved": True,
        }
        if "run_steps" in include_related:
            data["run_steps"] = [dict(s, run_id=run.id, status_humanized=STATUS_HUMANIZED.get(s["status"]))
                                 for s in run.steps]
        if '"job"' in include_related or "'job'" in include_related:
            data["job"] = {"id": run.job_id, "name": run.job_name, "environment_id": run.environment_id}
        return data

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> "DbtCloudStandin":
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        for gate in list(self._holds.values()):
            gate.set()
        self._server.stop()


class ServerThread:
    """An ASGI app under uvicorn on a free loopback port, in a daemon thread (waits for readiness)."""

    def __init__(self, app, name: str = "asgi-app", lifespan: str = "on"):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None   # not the main thread
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerThread":
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server failed to start")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()


def _ok(data) -> Response:
    return JSONResponse({"status": {"code": 200, "is_success": True, "user_message": "Success!",
                                    "developer_message": ""}, "data": data})


def _error(code: int, message: str) -> Response:
    return JSONResponse({"status": {"code": code, "is_success": False, "user_message": message,
                                    "developer_message": ""}, "data": None}, status_code=code)


# -- webhooks -------------------------------------------------------------------------------------

def webhook_event(run: StandinRun, account_id: int, *, event_type: str = "job.run.completed") -> dict:
    """A delivery's payload as dbt Cloud sends it: ids inside `data` are strings, accountId a number."""
    status = {10: ("Success", 10), 20: ("Errored", 20), 30: ("Cancelled", 30)}.get(run.status,
                                                                                    ("Running", 3))
    data = {
        "jobId": str(run.job_id), "jobName": run.job_name, "runId": str(run.id),
        "environmentId": str(run.environment_id), "environmentName": "Production", "dbtVersion": "1.11",
        "projectName": "Sample shop", "projectId": str(run.project_id), "runStatus": status[0],
        "runStatusCode": status[1], "runStatusMessage": "None", "runReason": "Kicked off from UI",
        "runStartedAt": "2026-01-01T09:58:00Z",
    }
    data["runErroredAt" if run.status == 20 else "runFinishedAt"] = "2026-01-01T10:00:00Z"
    if event_type == "job.run.started":
        data.update(runStatus="Running", runStatusCode=3)
    return {"accountId": account_id, "webhooksID": "wsu_standin", "eventId": f"wev_{uuid.uuid4().hex}",
            "timestamp": datetime.now(timezone.utc).isoformat(), "eventType": event_type,
            "webhookName": "Emarsys sync", "data": data}


class WebhookSender:
    """Posts deliveries the way dbt Cloud does: the raw JSON body, `Authorization` = hex HMAC-SHA256."""

    def __init__(self, url: str, secret: str):
        self.url = url
        self.secret = secret

    def sign(self, body: bytes) -> str:
        return hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()

    def send(self, payload: dict | bytes, *, signature: str | None = None, sign: bool = True,
             timeout: float = 10.0) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if sign:
            headers["Authorization"] = signature if signature is not None else self.sign(body)
        return httpx.post(self.url, content=body, headers=headers, timeout=timeout)
