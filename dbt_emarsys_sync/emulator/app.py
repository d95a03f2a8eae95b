"""The emulator's HTTP surface: the token endpoint, both API versions and the control API.

    POST /oauth2/token                 OAuth 2.0 client credentials (Basic auth, form body)
    /api/v3/...                        Bearer tokens only
    /api/v2/...                        WSSE only
    /_emulator/...                     the control API (no auth): faults, settings, seed, reset,
                                       inspection (control.py)

Every API response is the Emarsys envelope `{replyCode, replyText, data}` (emarsys-api.md §2), except
the bare 403 of a missing permission. Each API request goes: authenticate (§1) -> count against the
API user's rate limit (§6) -> scripted fault, if one matches (faults.py) -> permission (§1.4) ->
handler. Resource paths are the same under v2 and v3, with or without a trailing slash.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .auth import ApiUser, Authenticator, AuthFailure
from .config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_SECRET, DEFAULT_USERNAME, EmulatorConfig
from .faults import Fault, FaultBook
from .fields import SUPPORTED_LANGUAGES
from .ratelimit import RateLimiter
from .settings import Settings
from .store import MAX_CONTACT_KEYS, ApiError, Store, StoreOptions, _label
from .transport import (
    ConnectionLayer,
    InProcessAsyncTransport,
    InProcessTransport,
    RequestContext,
    RequestLog,
)

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_PUT_BYTES = 8 * 1024 * 1024
MAX_POST_BYTES = 10 * 1024 * 1024
CONTACT_IDS_DEFAULT_TOP = 10_000
CONTACT_IDS_MAX_TOP = 100_000
QUERY_MAX_LIMIT = 10_000
# Every route takes every method, so a wrong one gets Emarsys's 400 replyCode 1009, not a bare 405.
ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_SECRET",
    "DEFAULT_USERNAME",
    "MAX_BATCH",
    "Emulator",
    "EmulatorConfig",
    "StoreOptions",
    "envelope",
]

Handler = Callable[[Request, ApiUser, RequestContext], Awaitable[Response]]


def envelope(data: object = "", reply_code: int = 0, reply_text: str = "OK", status: int = 200,
             headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"replyCode": reply_code, "replyText": reply_text, "data": data})
    response = Response(body, status_code=status, media_type="application/json")
    if headers:
        add_headers(response, headers)
    return response


def add_headers(response: Response, headers: dict[str, str]) -> None:
    """Add headers keeping their case (`X-Ratelimit-Remaining` is documented with that casing;
    Starlette's header API would lower-case the names)."""
    response.raw_headers.extend((name.encode(), value.encode()) for name, value in headers.items())


def _empty_as_list(errors: dict) -> dict | list:
    """A clean `errors` is `[]`: Emarsys serialises an empty PHP array (emarsys-api.md §3.4)."""
    return errors if errors else []


class Emulator:
    """Holds the emulator's state and builds its ASGI app (`.app`).

    In-process use, no sockets: `httpx.Client(transport=emulator.sync_transport())` or
    `httpx.AsyncClient(transport=emulator.async_transport())` with any base URL."""

    def __init__(self, config: EmulatorConfig | None = None):
        self.config = config or EmulatorConfig()
        self.settings: Settings = self.config.settings()
        # One clock for everything time-based (token expiry, WSSE, rate limits, read-after-write
        # lag): moving it with clock_skew lets a test jump ahead instead of sleeping.
        self.store = Store(self.settings, self.config.custom_fields, clock=self.server_time)
        self.users: dict[str, ApiUser] = {}
        self.auth = Authenticator(self.users, self.settings, clock=self.server_time)
        self.limiter = RateLimiter(self._limit_for, lambda: self.settings.rate_limit_window,
                                   self.server_time)
        self.faults = FaultBook()
        self.requests = RequestLog()
        self._closing = threading.Event()
        from .control import control_routes

        self.starlette = Starlette(routes=control_routes(self) + self._routes())
        self.app = ConnectionLayer(self.starlette, self.requests, self.server_time)
        self._start_state()

    # -- state --------------------------------------------------------------------------------

    def server_time(self) -> float:
        """The server's clock: real time plus the configured skew."""
        return time.time() + self.settings.clock_skew

    def _limit_for(self, user: ApiUser) -> int:
        return user.rate_limit if user.rate_limit is not None else self.settings.rate_limit

    def _start_state(self) -> None:
        """Users, faults and seed data of the configuration (at start and on reset)."""
        self.users.clear()
        self.users[self.config.client_id] = ApiUser(self.config.client_id, self.config.client_secret, "oauth")
        self.users[self.config.username] = ApiUser(self.config.username, self.config.secret, "wsse")
        for spec in self.config.users:
            user = ApiUser.from_dict(spec)
            self.users[user.name] = user
        self.faults.add(list(self.config.faults))
        if self.config.seed:
            self.seed(self.config.seed)

    def reset(self) -> None:
        """Back to the state the emulator started in (issued tokens stay valid for users that remain)."""
        with self.store.lock:
            self.settings.update(self.config.settings().as_dict())
            self.store.reset()
            self.faults.clear()
            self.requests.clear()
            self.limiter.reset()
            self.auth.forget_nonces()
            self._start_state()

    def seed(self, data: dict) -> dict:
        """Preload fields, contacts, lists and API users. Raises ValueError naming the bad entry."""
        if not isinstance(data, dict):
            raise ValueError("the seed must be an object with any of fields, contacts, lists, users")
        unknown = set(data) - {"fields", "contacts", "lists", "users"}
        if unknown:
            raise ValueError(f"unknown seed key(s) {', '.join(sorted(unknown))}; "
                             "known: fields, contacts, lists, users")
        for name in ("fields", "contacts", "lists", "users"):
            if name in data and not isinstance(data[name], list):
                raise ValueError(f"seed '{name}' must be a list")
        users = []
        for n, spec in enumerate(data.get("users", [])):
            try:
                users.append(ApiUser.from_dict(spec))
            except ValueError as err:
                raise ValueError(f"users[{n}]: {err}") from None
        out: dict[str, Any] = {}
        with self.store.lock:
            if data.get("fields"):
                out["fields"] = self.store.add_custom_fields(data["fields"])
            if data.get("contacts"):
                out["contacts"] = self.store.seed_contacts(data["contacts"])
            if data.get("lists"):
                out["lists"] = self.store.seed_lists(data["lists"])
        for user in users:
            self.users[user.name] = user
        if users:
            out["users"] = [user.name for user in users]
        return out

    def update_settings(self, changes: dict) -> dict:
        """Apply run-time settings (all or none). Raises ValueError naming the bad setting."""
        if not isinstance(changes, dict):
            raise ValueError("settings must be an object of setting -> value")
        with self.store.lock:
            before = (self.settings.email_case_sensitive, self.settings.email_trim_whitespace)
            self.settings.update(changes)
            if (self.settings.email_case_sensitive, self.settings.email_trim_whitespace) != before:
                self.store.reindex()
        return self.settings.as_dict()

    def close(self) -> None:
        """Cut short the waits of pending `hang`/`slow` faults (the server is stopping)."""
        self._closing.set()

    # -- in-process use -----------------------------------------------------------------------

    def sync_transport(self) -> InProcessTransport:
        """An httpx sync transport running this emulator in-process (no socket)."""
        return InProcessTransport(self.app)

    def async_transport(self) -> InProcessAsyncTransport:
        """An httpx async transport running this emulator in-process (no socket)."""
        return InProcessAsyncTransport(app=self.app)

    # -- routing ------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        table: list[tuple[str, dict[str, tuple[Handler, str]]]] = [
            ("/field", {"GET": (self.get_fields, "field.get")}),
            ("/field/translate/{lang}", {"GET": (self.get_fields, "field.get")}),
            ("/field/choices", {"GET": (self.get_choices_of_fields, "field.get")}),
            ("/field/{field_id}/choice", {"GET": (self.get_choices, "field.get")}),
            ("/field/{field_id}/choice/translate/{lang}", {"GET": (self.get_choices, "field.get")}),
            ("/contact", {"POST": (self.create_contacts, "contact.create"),
                          "PUT": (self.update_contacts, "contact.update")}),
            ("/contact/getdata", {"POST": (self.getdata, "contact.getdata")}),
            ("/contact/checkids", {"POST": (self.checkids, "contact.getdata")}),
            ("/contact/delete", {"POST": (self.delete_contacts, "contact.delete")}),
            ("/contact/query", {"GET": (self.query, "contact.getdata")}),
            ("/contactlist", {"GET": (self.all_lists, "contactlist.get"),
                              "POST": (self.create_list, "contactlist.create")}),
            ("/contactlist/{list_id}/add", {"POST": (self.add_to_list, "contactlist.update")}),
            ("/contactlist/{list_id}/delete", {"POST": (self.remove_from_list, "contactlist.update")}),
            ("/contactlist/{list_id}/replace", {"POST": (self.replace_list, "contactlist.update")}),
            ("/contactlist/{list_id}/rename", {"POST": (self.rename_list, "contactlist.update")}),
            ("/contactlist/{list_id}/deletelist", {"POST": (self.delete_list, "contactlist.delete")}),
            ("/contactlist/{list_id}/count", {"GET": (self.count_list, "contactlist.get")}),
            ("/contactlist/{list_id}/contactIds", {"GET": (self.list_contact_ids, "contactlist.get")}),
            ("/contactlist/{list_id}/contacts/{contact_id}",
             {"GET": (self.list_has_contact, "contactlist.get")}),
        ]
        routes = [Route("/oauth2/token", self.token, methods=ALL_METHODS)]
        for path, methods in table:
            endpoint = self._api_endpoint(methods)
            routes.append(Route(f"/api/{{version}}{path}", endpoint, methods=ALL_METHODS))
            routes.append(Route(f"/api/{{version}}{path}/", endpoint, methods=ALL_METHODS))
        routes.append(Route("/api/{version}/{rest:path}", self._api_endpoint({}), methods=ALL_METHODS))
        routes.append(Route("/{rest:path}", self.not_found, methods=ALL_METHODS))
        return routes

    def _api_endpoint(self, methods: dict[str, tuple[Handler, str]]):
        async def endpoint(request: Request) -> Response:
            return await self._serve_api(request, methods)
        return endpoint

    async def not_found(self, request: Request) -> Response:
        return envelope("", 1, "Not Found", status=404)

    def _authenticate(self, request: Request, version: str) -> ApiUser:
        """Bearer tokens on v3, WSSE on v2; the other scheme is refused unless cross_scheme_auth."""
        authorization = request.headers.get("authorization")
        wsse = request.headers.get("x-wsse") or request.headers.get("wsse")
        bearer = authorization is not None and authorization.lower().startswith("bearer ")
        if version == "v3":
            if bearer:
                return self.auth.check_bearer(authorization)
            if wsse and self.settings.cross_scheme_auth:
                return self.auth.check_wsse(wsse)
            raise AuthFailure("Unauthorized")
        if wsse:
            return self.auth.check_wsse(wsse)
        if bearer and self.settings.cross_scheme_auth:
            return self.auth.check_bearer(authorization)
        raise AuthFailure("Unauthorized")

    async def _serve_api(self, request: Request, methods: dict[str, tuple[Handler, str]]) -> Response:
        version = request.path_params.get("version")
        if version not in ("v2", "v3"):
            return envelope("", 1, "Not Found", status=404)
        ctx: RequestContext = request.scope.get("emulator") or RequestContext(None)
        try:
            user = self._authenticate(request, version)
        except AuthFailure as failure:
            return envelope("", 1, failure.reply_text, status=401)
        ctx.user = user.name
        allowed, headers = self.limiter.hit(user)
        if not allowed:
            if self.settings.rate_limit_reply == "empty":
                response = Response(b"", status_code=429)
                add_headers(response, headers)
                return response
            return envelope("", 7003, "Too many requests for this account and resource within the last "
                            "minute", status=429, headers=headers)
        fault = self.faults.take(request.method, request.url.path)
        if fault is not None:
            ctx.fault = fault.type
            early = await self._fault_before(fault, request, ctx, user, headers)
            if early is not None:
                return early
        if not methods:
            response = envelope("", 1, "Not Found", status=404)
        elif request.method not in methods:
            response = envelope("", 1009, "Invalid HTTP method", status=400)
        elif (version == "v3" and request.url.path.rstrip("/").endswith("/contactIds")
              and not self.settings.v3_contact_ids):
            response = envelope("", 1, "Not Found", status=404)
        else:
            handler, permission = methods[request.method]
            if not user.may(permission):
                response = self._forbidden()
            else:
                try:
                    response = await handler(request, user, ctx)
                except ApiError as err:
                    response = envelope(err.data, err.reply_code, err.reply_text, status=err.status)
                except Exception:
                    log.exception("the emulator failed on %s %s", request.method, request.url.path)
                    response = envelope("", 1003, "Internal error", status=500)
        if fault is not None:
            if fault.type == "slow":
                await self._sleep(fault.seconds or 0)
            elif fault.type == "drop_after_write":
                ctx.drop()
        if response.status_code != 429:   # a 429 carries its own (exhausted) rate-limit headers
            add_headers(response, headers)
        return response

    async def _fault_before(self, fault: Fault, request: Request, ctx: RequestContext, user: ApiUser,
                            headers: dict[str, str]) -> Response | None:
        """Faults that act before the request is processed; a response ends the request."""
        if fault.type == "status":
            code, text = fault.reply()
            if fault.status == 429:
                return envelope("", code, text, status=429,
                                headers=self.limiter.exhausted_headers(user, fault.reset_seconds))
            return envelope("", code, text, status=fault.status or 500, headers=headers)
        if fault.type == "drop":
            ctx.drop()
            return Response(b"", status_code=500)
        if fault.type == "hang":
            # The request has arrived whole: read it now, so the write still happens after the hang
            # even though the client has given up and closed the connection meanwhile.
            await request.body()
            await self._sleep(fault.seconds or 0)
        return None

    def _forbidden(self) -> Response:
        if self.settings.forbidden_body == "envelope":
            return envelope("", 1, "Forbidden", status=403)
        return Response(b"Forbidden", status_code=403, media_type="text/plain")

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    # -- token --------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse({"error": "invalid_request"}, status_code=405)
        ctx: RequestContext = request.scope.get("emulator") or RequestContext(None)
        fault = self.faults.take(request.method, request.url.path)
        if fault is not None:
            ctx.fault = fault.type
            if fault.type == "status":
                return JSONResponse({"error": "temporarily_unavailable"}, status_code=fault.status or 500)
            if fault.type == "drop":
                ctx.drop()
                return Response(b"", status_code=500)
            if fault.type == "hang":
                await request.body()
                await self._sleep(fault.seconds or 0)
        body = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        try:
            token = self.auth.issue_token(request.headers.get("authorization"), form)
            response = JSONResponse(token)
            ctx.user = _basic_user(request.headers.get("authorization"))
        except AuthFailure as failure:
            response = JSONResponse({"error": failure.reply_text}, status_code=failure.status)
        if fault is not None:
            if fault.type == "slow":
                await self._sleep(fault.seconds or 0)
            elif fault.type == "drop_after_write":
                ctx.drop()
        return response

    # -- request bodies ------------------------------------------------------------------------

    @staticmethod
    async def _body(request: Request, limit: int) -> dict:
        raw = await request.body()
        if len(raw) > limit:
            raise ApiError(413, 1001, f"Request payload exceeds {limit // (1024 * 1024)} MB")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, 1010, "Invalid request payload (not JSON)") from None
        if not isinstance(body, dict):
            raise ApiError(400, 1010, "Invalid request payload (not JSON)")
        return body

    @staticmethod
    def _list_id(request: Request) -> int:
        raw = request.path_params["list_id"]
        if not raw.isdigit():
            # What a non-numeric list id got in practice (emarsys-api.md §5.3).
            raise ApiError(400, 1, f"Action {raw} is invalid.")
        return int(raw)

    # -- fields -------------------------------------------------------------------------------

    @staticmethod
    def _lang(request: Request) -> str:
        lang = request.path_params.get("lang", "en")
        if lang not in SUPPORTED_LANGUAGES:
            raise ApiError(400, 1002, "Invalid language code")
        return lang

    async def get_fields(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        lang = self._lang(request)
        return envelope([f.as_api(lang) for f in self.store.fields.values()])

    async def get_choices(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        lang = self._lang(request)
        raw = request.path_params["field_id"]
        f = self.store.fields.get(int(raw)) if raw.isdigit() else self.store.fields_by_string_id.get(raw)
        if f is None:
            raise ApiError(404, 1001, "No such field")
        return envelope(f.choices_as_api(lang))

    async def get_choices_of_fields(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        lang = request.query_params.get("language", "en")
        if lang not in SUPPORTED_LANGUAGES:
            raise ApiError(400, 1002, "Invalid language code")
        out = {}
        for ref in filter(None, request.query_params.get("fields", "").split(",")):
            f = self.store.resolve_field(ref.strip())
            if f is None:
                raise ApiError(404, 1001, "No such field")
            out[str(f.id)] = f.choices_as_api(lang)
        return envelope(out)

    # -- contacts -----------------------------------------------------------------------------

    async def create_contacts(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        """POST /contact (emarsys-api.md §3.2): create only; existing keys fail with 2009."""
        body = await self._body(request, MAX_POST_BYTES)
        return self._write_contacts(body, ctx, create=True, update=False)

    async def update_contacts(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        """PUT /contact?create_if_not_exists=0|1 (emarsys-api.md §3.3)."""
        flag = request.query_params.get("create_if_not_exists", "0").lower()
        if flag not in ("0", "1", "true", "false", ""):
            raise ApiError(400, 1001, "One or more parameters are invalid or missing")
        create = flag in ("1", "true")
        if create and not user.may("contact.create"):
            return self._forbidden()
        body = await self._body(request, MAX_PUT_BYTES)
        return self._write_contacts(body, ctx, create=create, update=True)

    def _write_contacts(self, body: dict, ctx: RequestContext, *, create: bool, update: bool) -> Response:
        key_id = body.get("key_id", 3)
        list_id = body.get("contact_list_id")
        source_id = body.get("source_id")
        if source_id is not None and (isinstance(source_id, bool) or not isinstance(source_id, int)
                                      or source_id <= 0):
            raise ApiError(400, 2013, "Invalid source id")
        race = ctx.fault == "already_exists"
        keys: list[str] = []
        ctx.keys = keys
        if "contacts" in body:
            contacts = body["contacts"]
            if not isinstance(contacts, list):
                raise ApiError(400, 1001, "One or more parameters are invalid or missing")
            if len(contacts) > MAX_BATCH:
                raise ApiError(400, 1000, "The request exceeded the maximum batch size of 1,000")
            ids, errors = self.store.write_contacts(key_id, contacts, create=create, update=update,
                                                    race=race, list_id=list_id, keys_out=keys)
            if self.settings.shuffle_ids and len(ids) > 1:
                # Unrelated to the order of contacts[] (emarsys-api.md §10.4): rotate by a random step.
                step = 1 + int(time.perf_counter_ns() // 1000) % (len(ids) - 1)
                ids = ids[step:] + ids[:step]
            if errors and not ids and self.settings.all_rows_failed_status == 400:
                (code, message), = next(iter(errors.values())).items()
                raise ApiError(400, int(code), message, data={"ids": [], "errors": errors})
            return envelope({"ids": ids, "errors": _empty_as_list(errors)})
        # Single-object form: the contact's fields sit beside key_id; errors are request-level.
        single = {k: v for k, v in body.items() if k not in ("key_id", "contact_list_id", "source_id")}
        ids, errors = self.store.write_contacts(key_id, [single], create=create, update=update, race=race,
                                                list_id=list_id, keys_out=keys)
        if errors:
            (code, message), = next(iter(errors.values())).items()
            raise ApiError(400, int(code), message)
        return envelope({"id": ids[0]})

    async def getdata(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        """POST /contact/getdata (emarsys-api.md §3.5): camelCase keys, errors as an array."""
        body = await self._body(request, MAX_POST_BYTES)
        if "keyValues" not in body:
            raise ApiError(400, 10001, "Missing parameter keyValues")
        key_values, wanted = body["keyValues"], body.get("fields")
        if not isinstance(key_values, list):
            raise ApiError(400, 10001, "keyValues must be an array")
        if wanted is not None and not isinstance(wanted, list):
            raise ApiError(400, 10001, "fields must be an array")
        if len(key_values) > MAX_CONTACT_KEYS:
            raise ApiError(400, 10001, "Max. number of contacts: 1000")
        key_id = body.get("keyId", 3)
        field_ids = []
        refs = self.store.field_refs()
        for ref in wanted or []:
            f = refs.get(ref if isinstance(ref, str) else str(ref)) if not isinstance(ref, bool) else None
            if f is None:
                raise ApiError(400, 2006, f"Invalid field id: {ref}")
            field_ids.append(f.id)
        ctx.keys = [_label(v) for v in key_values]
        result, errors = self.store.getdata(key_id, key_values, field_ids)
        return envelope({"errors": errors, "result": result})

    async def checkids(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        """POST /contact/checkids (emarsys-api.md §3.6)."""
        body = await self._body(request, MAX_POST_BYTES)
        external_ids = body.get("external_ids")
        if not isinstance(external_ids, list):
            raise ApiError(400, 2003, "Invalid datatype for the list of external ids. Array expected")
        if len(external_ids) > MAX_CONTACT_KEYS:
            raise ApiError(400, 2002, "The list of external ids exceeds the maximum size (1,000)")
        ctx.keys = [_label(v) for v in external_ids]
        ids, errors = self.store.checkids(body.get("key_id", 3), external_ids,
                                          bool(body.get("get_multiple_ids")), body.get("contact_list_id"))
        return envelope({"ids": ids if ids else [], "errors": _empty_as_list(errors)})

    async def delete_contacts(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        """POST /contact/delete (emarsys-api.md §3.8): values listed under the key field's id."""
        body = await self._body(request, MAX_POST_BYTES)
        key_id = body.get("key_id", 3)
        key = self.store.key(key_id)
        raw = None
        for ref in (*key.refs, str(key_id)):
            if ref in body:
                raw = body[ref]
                break
        single = not isinstance(raw, list)
        values = [raw] if single else raw
        if raw is None or raw == "" or not values:
            raise ApiError(400, 2005, f"No value provided for key field: {key.name}")
        if len(values) > MAX_CONTACT_KEYS:
            raise ApiError(400, 1000, "The request exceeded the maximum batch size of 1,000")
        ctx.keys = [_label(v) for v in values]
        deleted, errors = self.store.delete_contacts(key_id, values, body.get("contact_list_id"))
        data: dict[str, Any] = {"errors": _empty_as_list(errors)}
        if self.settings.delete_reports_count:
            data = {"deleted_contacts": deleted, **data}
        if not deleted and errors and all("2008" in e for e in errors.values()):
            # Nothing found to delete: 404 with 2008 (emarsys-api.md §3.8).
            message = next(iter(errors.values()))["2008"]
            raise ApiError(404, 2008, message, data=data)
        return envelope(data)

    async def query(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        """GET /contact/query/?{field}={value}&return={field}&limit=&offset=&excludeempty="""
        params = request.query_params
        returned = [r for r in params.get("return", "").split(",") if r]
        if not returned:
            raise ApiError(400, 2014, "No field specified to return")
        try:
            limit = int(params.get("limit", QUERY_MAX_LIMIT))
            offset = int(params.get("offset", 0))
        except ValueError:
            raise ApiError(400, 2016, "Invalid limit (1..10000)") from None
        if not 1 <= limit <= QUERY_MAX_LIMIT:
            raise ApiError(400, 2016, "Invalid limit (1..10000)")
        if offset < 0:
            raise ApiError(400, 1001, "One or more parameters are invalid or missing")
        filters = [(k, v) for k, v in params.multi_items()
                   if k not in ("return", "limit", "offset", "excludeempty")]
        if len(filters) > 1:
            raise ApiError(400, 1001, "One or more parameters are invalid or missing")
        filter_ref, filter_value = filters[0] if filters else (None, None)
        exclude_empty = params.get("excludeempty", "false").lower() in ("1", "true")
        rows = self.store.query(filter_ref, filter_value, returned, limit, offset, exclude_empty)
        return envelope({"errors": [], "result": rows})

    # -- contact lists ------------------------------------------------------------------------

    async def all_lists(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        return envelope(self.store.all_lists())

    async def create_list(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        """POST /contactlist (emarsys-api.md §5.1): `errors` only when external_ids were sent."""
        body = await self._body(request, MAX_POST_BYTES)
        external_ids = body.get("external_ids")
        if isinstance(external_ids, list):
            ctx.keys = [_label(v) for v in external_ids]
        list_id, errors = self.store.create_list(body.get("name"), body.get("description"),
                                                 body.get("key_id", 3), external_ids)
        data: dict[str, Any] = {"id": list_id}
        if errors is not None:
            data["errors"] = _empty_as_list(errors)
        return envelope(data)

    async def _members_body(self, request: Request, ctx: RequestContext) -> tuple[int, object, object]:
        list_id = self._list_id(request)
        body = await self._body(request, MAX_POST_BYTES)
        external_ids = body.get("external_ids")
        if isinstance(external_ids, list):
            ctx.keys = [_label(v) for v in external_ids]
        return list_id, body.get("key_id", 3), external_ids

    async def add_to_list(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        list_id, key_id, external_ids = await self._members_body(request, ctx)
        inserted, errors = self.store.add_to_list(list_id, key_id, external_ids)
        return envelope({"inserted_contacts": inserted, "errors": _empty_as_list(errors)})

    async def remove_from_list(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        list_id, key_id, external_ids = await self._members_body(request, ctx)
        deleted, errors = self.store.remove_from_list(list_id, key_id, external_ids)
        return envelope({"deleted_contacts": deleted, "errors": _empty_as_list(errors)})

    async def replace_list(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        list_id, key_id, external_ids = await self._members_body(request, ctx)
        inserted, errors = self.store.replace_list(list_id, key_id, external_ids)
        return envelope({"inserted_contacts": inserted, "errors": _empty_as_list(errors)})

    async def rename_list(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        list_id = self._list_id(request)
        body = await self._body(request, MAX_POST_BYTES)
        return envelope(self.store.rename_list(list_id, body.get("name")))

    async def delete_list(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        self.store.delete_list(self._list_id(request))
        return envelope({})

    async def count_list(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        contact_list = self.store.get_list(self._list_id(request), "3006")
        return envelope(len(contact_list.members))

    async def list_contact_ids(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        """GET /contactlist/{id}/contactIds?$top=&$skiptoken= (emarsys-api.md §5.6)."""
        list_id = self._list_id(request)
        params = request.query_params
        try:
            top = int(params.get("$top", CONTACT_IDS_DEFAULT_TOP))
            skip = int(params.get("$skiptoken", 0))
        except ValueError:
            raise ApiError(400, 1001, "One or more parameters are invalid or missing") from None
        if not 1 <= top <= CONTACT_IDS_MAX_TOP or skip < 0:
            raise ApiError(400, 1001, "One or more parameters are invalid or missing")
        ids, more = self.store.list_member_ids(list_id, top, skip)
        # `next` is relative to the version root, without /api/v2 (emarsys-api.md §5.6).
        next_path = f"/contactlist/{list_id}/contactIds?$skiptoken={skip + top}&$top={top}" if more else None
        return envelope({"value": ids, "next": next_path})

    async def list_has_contact(self, request: Request, user: ApiUser, ctx: RequestContext) -> Response:
        contact_list = self.store.get_list(self._list_id(request), "3006")
        raw = request.path_params["contact_id"]
        return envelope(raw.isdigit() and int(raw) in contact_list.members)


def _basic_user(authorization: str | None) -> str | None:
    try:
        return base64.b64decode((authorization or "")[6:].strip()).decode().partition(":")[0] or None
    except (ValueError, UnicodeDecodeError):
        return None
