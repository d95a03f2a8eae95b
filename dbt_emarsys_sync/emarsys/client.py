"""The Emarsys client: the only code that sends HTTP requests to Emarsys.

    client = EmarsysClient(EmarsysSettings.from_env())
    fields = client.get_fields()
    outcome = client.upsert_contacts(key_id=3, keys=[...], body=encoded_json, create=True)

Each request goes: rate limiter -> auth flow (token / WSSE header) -> HTTP -> classify. `classify` is
the one place that decides between success, retry (and how long to wait) and failure.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx
import orjson
import stamina

from .auth import OAuthClientCredentials, WsseAuth
from .errors import AuthError, EmarsysError, PermissionDenied, RequestRejected, TransientError
from .ratelimit import RateLimiter, limiter_for
from .settings import EmarsysSettings
from .wire import Envelope, key_errors, parse_envelope

log = logging.getLogger(__name__)

USER_AGENT = "dbt-emarsys-sync"

# Endpoint -> the permission an API user needs for it (emarsys-api.md §1.4), for 403 messages.
PERMISSIONS = {
    ("GET", "/field"): "field.get",
    ("PUT", "/contact"): "contact.update (and contact.create to create contacts)",
    ("POST", "/contact"): "contact.create",
    ("POST", "/contact/getdata"): "contact.getdata",
    ("POST", "/contact/delete"): "contact.delete",
}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    timeout_seconds: float = 900.0      # total time one request may spend retrying
    wait_initial: float = 1.0
    wait_max: float = 60.0
    rate_limit_fallback_wait: float = 60.0   # on a 429 without a usable X-RateLimit-Reset


@dataclass
class BatchOutcome:
    """What Emarsys said about each key of one contact request, matched by key value."""

    acknowledged: list[str] = field(default_factory=list)
    rejected: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    # Emarsys returns integer ids for contacts it created and string ids for ones it updated.
    created: int = 0
    updated: int = 0


class _Retry(Exception):
    """Raised inside the retry loop; `wait` overrides the exponential backoff when set."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class EmarsysClient:
    def __init__(self, settings: EmarsysSettings, *, transport: httpx.BaseTransport | None = None,
                 retry: RetryPolicy | None = None, limiter: RateLimiter | None = None,
                 max_connections: int = 16):
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or limiter_for(settings.api_url, settings.user,
                                              settings.rate_limit_per_minute)
        if settings.scheme == "oauth":
            self._auth: httpx.Auth = OAuthClientCredentials(
                settings.auth_url, settings.client_id or "", settings.client_secret or "")
        else:
            self._auth = WsseAuth(settings.username or "", settings.secret or "")
        self._http = httpx.Client(
            base_url=settings.base_url,
            auth=self._auth,
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_seconds, connect=15.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            verify=settings.ca_bundle or True,
        )
        self.requests_sent = 0
        self.bytes_sent = 0

    def __repr__(self) -> str:
        return f"EmarsysClient(base_url={self.settings.base_url!r}, user={self.settings.user!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "EmarsysClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the request loop ---------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: bytes | None = None,
                params: dict | None = None) -> Envelope:
        """Send one API request with rate limiting and retries; return the successful envelope."""
        try:
            return self._request_with_retries(method, path, body, params)
        except _Retry as exc:
            raise TransientError(f"gave up after retries: {exc.reason}") from None

    def _request_with_retries(self, method: str, path: str, body: bytes | None,
                              params: dict | None) -> Envelope:
        headers = {"Content-Type": "application/json"} if body is not None else None
        for attempt in stamina.retry_context(
            on=self._backoff_hook, attempts=self.retry.attempts,
            timeout=self.retry.timeout_seconds, wait_initial=self.retry.wait_initial,
            wait_max=self.retry.wait_max,
        ):
            with attempt:
                self.limiter.acquire()
                self.requests_sent += 1
                self.bytes_sent += len(body or b"")
                try:
                    response = self._http.request(method, path, content=body, params=params,
                                                  headers=headers)
                except httpx.TimeoutException as exc:
                    raise _Retry(f"{method} {path}: timed out ({type(exc).__name__})") from None
                except httpx.TransportError as exc:
                    raise _Retry(f"{method} {path}: connection error ({type(exc).__name__})") from None
                return self._classify(method, path, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff_hook(self, exc: Exception) -> bool | float:
        if not isinstance(exc, _Retry):
            return False
        wait = exc.wait
        if wait is not None:
            wait += random.uniform(0, 1.0)  # jitter, so parallel syncs don't return in lockstep
        log.info("retrying after %s; waiting %s", exc.reason,
                 f"{wait:.1f}s" if wait is not None else "with exponential backoff")
        return wait if wait is not None else True

    def _classify(self, method: str, path: str, response: httpx.Response) -> Envelope:
        self.limiter.observe(response.headers)
        env = parse_envelope(response.status_code, response.content)
        status = response.status_code
        if status == 429:
            wait = self._rate_limit_wait(response)
            self.limiter.block_for(wait)
            raise _Retry(f"{method} {path}: HTTP 429 rate limited", wait=wait)
        if status >= 500:
            raise _Retry(f"{method} {path}: HTTP {status} {env.reply_text[:100]}")
        if status == 401:
            raise AuthError(self._auth_message(env, response))
        if status == 403:
            needed = PERMISSIONS.get((method, _endpoint(path)), "the permission for this endpoint")
            raise PermissionDenied(
                f"the Emarsys API user {self.settings.user!r} lacks a permission: {method} {path} "
                f"answered HTTP 403; enable {needed} for this API user"
            )
        if status >= 400 or env.reply_code not in (0, None):
            raise RequestRejected(
                f"{method} {path}: HTTP {status}, replyCode {env.reply_code}: {env.reply_text}",
                status, env.reply_code)
        if env.reply_code is None:
            raise _Retry(f"{method} {path}: HTTP {status} with a body that is not an Emarsys envelope")
        return env

    def _rate_limit_wait(self, response: httpx.Response) -> float:
        reset = response.headers.get("x-ratelimit-reset")
        try:
            return min(max(float(reset) - time.time(), 0.0), 120.0) if reset else \
                self.retry.rate_limit_fallback_wait
        except ValueError:
            return self.retry.rate_limit_fallback_wait

    def _auth_message(self, env: Envelope, response: httpx.Response) -> str:
        text = env.reply_text or "Unauthorized"
        if "time frame" in text.lower():
            skew = _clock_skew(response)
            detail = f" (this machine's clock is {skew:+.0f}s off the server's)" if skew is not None else ""
            return ("credentials rejected: Emarsys says the WSSE timestamp is outside its 5-minute window"
                    f"{detail}; synchronise this machine's clock (NTP)")
        names = ("EMARSYS_CLIENT_ID and EMARSYS_CLIENT_SECRET" if self.settings.scheme == "oauth"
                 else "EMARSYS_USERNAME and EMARSYS_SECRET")
        return f"credentials rejected by Emarsys ({text}); check {names}"

    # -- endpoints ----------------------------------------------------------------------------

    def get_fields(self) -> list[dict]:
        """`GET /field`: also the connection check (it needs only the field.get permission)."""
        data = self.request("GET", "/field").data
        if not isinstance(data, list):
            raise EmarsysError("GET /field returned no field list")
        return data

    def get_choices(self, field_id: int) -> list[dict]:
        data = self.request("GET", f"/field/{field_id}/choice").data
        return data if isinstance(data, list) else []

    def upsert_contacts(self, key_id: int | str, keys: list[str], body: bytes, create: bool,
                        ) -> BatchOutcome:
        """`PUT /contact/?create_if_not_exists=0|1` with a pre-encoded batch body.

        `keys` are the key values in the body, as sent; each ends acknowledged or rejected. A request
        that fails as a whole raises (TransientError after retries), and its keys are neither.
        """
        env = self.request("PUT", "/contact/", body=body,
                           params={"create_if_not_exists": "1" if create else "0"})
        data = env.data if isinstance(env.data, dict) else {}
        errors = key_errors(data.get("errors"))
        ids = data.get("ids") if isinstance(data.get("ids"), list) else []
        outcome = BatchOutcome(created=sum(1 for i in ids if isinstance(i, int) and not isinstance(i, bool)),
                               updated=sum(1 for i in ids if isinstance(i, str)))
        for key in keys:
            if key in errors:
                outcome.rejected[key] = errors[key]
            else:
                outcome.acknowledged.append(key)
        return outcome


def encode_contacts(key_id: int | str, contacts: list[dict]) -> bytes:
    return orjson.dumps({"key_id": str(key_id), "contacts": contacts})


def _endpoint(path: str) -> str:
    path = path.rstrip("/")
    return path if path else "/"


def _clock_skew(response: httpx.Response) -> float | None:
    date_header = response.headers.get("date")
    if not date_header:
        return None
    try:
        server = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    return datetime.now(timezone.utc).timestamp() - server.timestamp()
