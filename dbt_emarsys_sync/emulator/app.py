"""The emulator's HTTP surface: a Starlette app serving the token endpoint and both API versions.

    POST /oauth2/token                 OAuth 2.0 client credentials (Basic auth, form body)
    /api/v3/...                        Bearer tokens only
    /api/v2/...                        WSSE only
    GET  /_emulator/contacts           inspection: every stored contact, keyed by field id

Every API response is the Emarsys envelope `{replyCode, replyText, data}` (emarsys-api.md §2).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .auth import ApiUser, Authenticator, AuthFailure
from .store import ApiError, Store, StoreOptions

MAX_BATCH = 1000
MAX_PUT_BYTES = 8 * 1024 * 1024
MAX_POST_BYTES = 10 * 1024 * 1024

DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
DEFAULT_USERNAME = "sandbox001"
DEFAULT_SECRET = "sandbox-wsse-secret"


@dataclass
class EmulatorConfig:
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    username: str = DEFAULT_USERNAME
    secret: str = DEFAULT_SECRET
    rate_limit: int = 1000          # requests per minute per API user; 0 = off
    token_ttl: int = 3600
    store_options: StoreOptions = field(default_factory=StoreOptions)
    custom_fields: list[dict] | None = None   # None = the default custom fields


class RateLimiter:
    """A fixed one-minute window per API user, with Emarsys's three headers (emarsys-api.md §6)."""

    def __init__(self, default_limit: int, clock=time.time):
        self.default_limit = default_limit
        self.clock = clock
        self._windows: dict[str, tuple[int, int]] = {}   # user -> (window start, count)
        self._lock = threading.Lock()

    def hit(self, user: ApiUser) -> tuple[bool, dict[str, str]]:
        limit = user.rate_limit if user.rate_limit is not None else self.default_limit
        if not limit:
            return True, {}
        now = self.clock()
        window = int(now // 60) * 60
        with self._lock:
            start, count = self._windows.get(user.name, (window, 0))
            if start != window:
                start, count = window, 0
            allowed = count < limit
            if allowed:
                count += 1
            self._windows[user.name] = (start, count)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(max(0, limit - count)),
            "X-RateLimit-Reset": str(start + 60),
        }
        return allowed, headers


def envelope(data: object = "", reply_code: int = 0, reply_text: str = "OK", status: int = 200,
             headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"replyCode": reply_code, "replyText": reply_text, "data": data})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class Emulator:
    """Holds the emulator's state and builds its Starlette app."""

    def __init__(self, config: EmulatorConfig | None = None):
        self.config = config or EmulatorConfig()
        self.store = Store(self.config.store_options, self.config.custom_fields)
        users = {
            self.config.client_id: ApiUser(self.config.client_id, self.config.client_secret, "oauth"),
            self.config.username: ApiUser(self.config.username, self.config.secret, "wsse"),
        }
        self.auth = Authenticator(users=users, token_ttl=self.config.token_ttl)
        self.limiter = RateLimiter(self.config.rate_limit)
        self.app = Starlette(routes=self._routes())

    # -- routing ------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        api = [
            ("/field", self.get_fields, ["GET"]),
            ("/field/translate/{lang}", self.get_fields, ["GET"]),
            ("/field/{field_id:int}/choice", self.get_choices, ["GET"]),
            ("/field/{field_id:int}/choice/translate/{lang}", self.get_choices, ["GET"]),
            ("/contact", self.put_contacts, ["PUT"]),
            ("/contact/", self.put_contacts, ["PUT"]),
        ]
        routes = [Route("/oauth2/token", self.token, methods=["POST"])]
        for version in ("v2", "v3"):
            for path, handler, methods in api:
                routes.append(Route(f"/api/{version}{path}", self._guarded(handler, version),
                                    methods=methods))
        routes.append(Route("/_emulator/contacts", self.inspect_contacts, methods=["GET"]))
        routes.append(Route("/_emulator/health", self.health, methods=["GET"]))
        return routes

    def _guarded(self, handler, version: str):
        """Authenticate (Bearer on v3, WSSE on v2), rate-limit, then run the handler."""

        async def endpoint(request: Request) -> Response:
            try:
                if version == "v3":
                    user = self.auth.check_bearer(request.headers.get("authorization"))
                else:
                    user = self.auth.check_wsse(request.headers.get("x-wsse"))
            except AuthFailure as failure:
                return envelope("", 1, failure.reply_text, status=401)
            allowed, headers = self.limiter.hit(user)
            if not allowed:
                return envelope("", 7003, "Too many requests for this account and resource within the "
                                "last minute", status=429, headers=headers)
            try:
                response = await handler(request, user)
            except ApiError as err:
                response = envelope("", err.reply_code, err.reply_text, status=err.status)
            response.headers.update(headers)
            return response

        return endpoint

    # -- token --------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        try:
            token = self.auth.issue_token(request.headers.get("authorization"), form)
        except AuthFailure as failure:
            return JSONResponse({"error": failure.reply_text}, status_code=401)
        return JSONResponse(token)

    # -- fields -------------------------------------------------------------------------------

    async def get_fields(self, request: Request, user: ApiUser) -> Response:
        return envelope([f.as_api() for f in self.store.fields.values()])

    async def get_choices(self, request: Request, user: ApiUser) -> Response:
        f = self.store.fields.get(request.path_params["field_id"])
        if f is None:
            raise ApiError(404, 1001, "No such field")
        return envelope([{"id": str(c.id), "choice": c.label, "bit_position": c.bit_position}
                         for c in f.choices])

    # -- contacts -----------------------------------------------------------------------------

    async def put_contacts(self, request: Request, user: ApiUser) -> Response:
        raw = await request.body()
        if len(raw) > MAX_PUT_BYTES:
            raise ApiError(413, 1001, "Request payload exceeds 8 MB")
        body = _json(raw)
        create = request.query_params.get("create_if_not_exists") in ("1", "true")
        if "contacts" in body:
            contacts = body["contacts"]
            if not isinstance(contacts, list):
                raise ApiError(400, 1001, "One or more parameters are invalid or missing")
            if len(contacts) > MAX_BATCH:
                raise ApiError(400, 1000, "The request exceeded the maximum batch size of 1,000")
            ids, errors = self.store.upsert_batch(body.get("key_id", 3), contacts, create)
            return envelope({"ids": ids, "errors": errors or []})
        # Single-object form: the contact's fields sit beside key_id; errors are request-level.
        single = {k: v for k, v in body.items() if k != "key_id"}
        ids, errors = self.store.upsert_batch(body.get("key_id", 3), [single], create)
        if errors:
            (code, message), = next(iter(errors.values())).items()
            raise ApiError(400, int(code), message)
        return envelope({"id": ids[0]})

    # -- inspection ---------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def inspect_contacts(self, request: Request) -> Response:
        with self.store.lock:
            contacts = [self.store.contact_as_api(c) for c in self.store.contacts.values()]
        return Response(orjson.dumps(contacts), media_type="application/json")


def _json(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, 1010, "Invalid request payload (not JSON)") from None
    if not isinstance(body, dict):
        raise ApiError(400, 1010, "Invalid request payload (not JSON)")
    return body
