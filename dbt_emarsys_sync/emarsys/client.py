"""The Emarsys client: the only code that sends HTTP requests to Emarsys.

    client = EmarsysClient(EmarsysSettings.from_env())
    client.check_connection()
    fields = client.get_fields()
    outcome = client.upsert_contacts(key_id=3, keys=[...], body=encoded_json, create=True)

Each attempt goes: rate limiter -> auth flow (token / WSSE header) -> HTTP -> `decide`. `decide` is the
one function that turns a response or a transport failure into success, a retry (with how long to wait
and why) or a failure; `stamina` runs the loop around it (bounded attempts and total time; its test
mode turns the waits off). The client is thread-safe: the engine sends from several threads at once.
"""

from __future__ import annotations

import logging
import random
import re
import ssl
import threading
import time
from collections import Counter
from contextlib import nullcontext
from itertools import repeat
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import stamina

from .auth import OAuthClientCredentials, TokenEndpointUnavailable, WsseAuth, is_time_frame_error
from .batching import MAX_READ_KEYS, InFlightKeys, chunk_list_ids, max_body_bytes
from .errors import (AuthError, ContactListExists, ContactListNotFound, EmarsysConfigError, EmarsysError,
                     EndpointUnavailable, PermissionDenied, RequestRejected, TransientError)
from .ratelimit import RateLimiter, limiter_for, reset_wait, server_time
from .settings import EmarsysSettings
from .wire import Envelope, key_errors, parse_envelope

log = logging.getLogger(__name__)

USER_AGENT = "dbt-emarsys-sync"

# Endpoint -> the permission an API user needs for it (emarsys-api.md §1.4, §8), for 403 messages.
# Emarsys documents the contact and field permission names; the contact-list ones are described.
_PERMISSIONS: list[tuple[str, re.Pattern, str]] = [
    (m, re.compile(p), perm) for m, p, perm in [
        ("GET", r"^/field(/.*)?$", "field.get"),
        ("PUT", r"^/contact/?$", "contact.update (and contact.create, to create contacts)"),
        ("POST", r"^/contact/?$", "contact.create"),
        ("POST", r"^/contact/getdata/?$", "contact.getdata"),
        ("POST", r"^/contact/checkids/?$", "contact.getdata"),
        ("POST", r"^/contact/delete/?$", "contact.delete"),
        ("GET", r"^/contactlist/?$", "the contact-list permission to list contact lists"),
        ("POST", r"^/contactlist/?$", "the contact-list permission to create contact lists"),
        ("POST", r"^/contactlist/\d+/add/?$", "the contact-list permission to add contacts to lists"),
        ("POST", r"^/contactlist/\d+/delete/?$",
         "the contact-list permission to remove contacts from lists"),
        ("GET", r"^/contactlist/\d+/.*$", "the contact-list permission to read list members"),
    ]
]
# Reply codes that mean "this request is wrong", even when Emarsys sends them with a 5xx (§2.3 lists
# the contact-list errors 3001-3005 under 500 too): never retried.
_REQUEST_ERROR_CODES = {1000, 1001, 1002, 1008, 1009, 1010, 2002, 2003, 2004, 2005, 2006, 2007, 2013,
                        2014, 2015, 2016, 2020, 3001, 3002, 3003, 3004, 3005, 3006, 3008}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8                   # tries of one request, the first included
    timeout_seconds: float = 900.0      # total time one request may spend, waits included
    wait_initial: float = 1.0           # exponential backoff for 5xx/timeouts/connection errors:
    wait_max: float = 60.0              # 1, 2, 4, ... seconds, at most wait_max,
    wait_jitter: float = 1.0            # plus up to this much at random
    rate_limit_fallback_wait: float = 60.0   # on a 429 without a usable X-RateLimit-Reset
    rate_limit_jitter: float = 2.0      # added to a 429's wait, so parallel clients don't return at once


# `dbt-emarsys-sync validate` must answer in seconds, not after fifteen minutes of retries.
CONNECTION_CHECK_RETRY = RetryPolicy(attempts=3, timeout_seconds=30.0, wait_initial=1.0, wait_max=5.0)


@dataclass(frozen=True)
class ContactList:
    id: int
    name: str


@dataclass
class BatchOutcome:
    """What Emarsys said about each key of one request, matched by key value (never by position):
    every key sent is either acknowledged or rejected with (replyCode, message)."""

    acknowledged: list[str] = field(default_factory=list)
    rejected: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    # Emarsys returns integer ids for contacts it created and string ids for ones it updated.
    created: int = 0
    updated: int = 0
    # Errors Emarsys reported under a key we didn't send (should not happen; kept to be reported).
    unmatched_errors: dict[str, tuple[int | None, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectionInfo:
    """What `check_connection` found: where, who, and that the field catalogue is readable."""

    base_url: str
    scheme: str
    user: str
    field_count: int


# -- the retry decision ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """`decide`'s verdict on one attempt: exactly one of envelope (success), error (fail now, no
    retry) or wait (retry after `wait` seconds, for `reason`)."""

    envelope: Envelope | None = None
    error: Exception | None = None
    wait: float | None = None
    reason: str = ""
    # The attempt may have reached Emarsys and been applied, though we saw no answer.
    ambiguous: bool = False


def decide(method: str, path: str, outcome: httpx.Response | Exception, *, attempt: int,
           elapsed: float, policy: RetryPolicy, settings: EmarsysSettings,
           wall_clock=time.time, rng: random.Random | None = None) -> Decision:
    """The whole retry policy in one place:

    - 2xx with replyCode 0: success. 2xx with another replyCode: rejected (an HTTP-200 error).
    - 429: retry after X-RateLimit-Reset (or `rate_limit_fallback_wait`), plus jitter.
    - 5xx (except 501 and request-error reply codes), timeouts, connection errors, a token endpoint
      that is down, a body that isn't the envelope: retry with exponential backoff and jitter.
    - 401: credentials rejected (the auth flow already refreshed the token / corrected the WSSE
      clock once). 403: the permission the API user lacks. Other 4xx: rejected. None is retried.
    - A retry whose wait would overrun the policy's total time is a failure now.
    """
    rng = rng or random
    what = f"{method} {path}"

    def backoff(reason: str, ambiguous: bool = False) -> Decision:
        wait = min(policy.wait_max, policy.wait_initial * 2 ** (attempt - 1)) + rng.uniform(0, policy.wait_jitter)
        return _bounded(Decision(wait=wait, reason=reason, ambiguous=ambiguous), elapsed, policy, what)

    if isinstance(outcome, Exception):
        exc = outcome
        if isinstance(exc, httpx.UnsupportedProtocol):
            return Decision(error=EmarsysConfigError(
                f"EMARSYS_API_URL / EMARSYS_AUTH_URL must be http(s) URLs ({what}: {exc})"))
        if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            return backoff(f"{what}: could not connect in time ({type(exc).__name__})")
        if isinstance(exc, httpx.TimeoutException):
            return backoff(f"{what}: timed out waiting for the answer ({type(exc).__name__})", True)
        if isinstance(exc, httpx.ConnectError) and _certificate_refused(exc):
            # Not transient: retrying can't make the certificate trusted.
            return Decision(error=EmarsysConfigError(
                f"{what}: the server's TLS certificate could not be verified ({_short(exc)}); if it is "
                "signed by a private CA, set EMARSYS_CA_BUNDLE to that CA's certificate file"))
        if isinstance(exc, httpx.ConnectError):
            return backoff(f"{what}: could not connect ({_short(exc)})")
        if isinstance(exc, httpx.TransportError):
            return backoff(f"{what}: connection lost ({type(exc).__name__})", True)
        if isinstance(exc, httpx.RequestError):
            return backoff(f"{what}: unreadable answer ({_short(exc)})", True)
        if isinstance(exc, TokenEndpointUnavailable):
            return backoff(str(exc))
        return Decision(error=exc)

    response = outcome
    status = response.status_code
    env = parse_envelope(status, response.content)
    if status == 429:
        wait = reset_wait(response.headers, wall_clock)
        source = "until X-RateLimit-Reset"
        if wait is None:
            wait, source = policy.rate_limit_fallback_wait, "(no X-RateLimit-Reset header)"
        wait += rng.uniform(0, policy.rate_limit_jitter)
        return _bounded(Decision(wait=wait, reason=f"{what}: HTTP 429 rate limited, waiting {source}"),
                        elapsed, policy, what)
    if status >= 500 and status != 501 and env.reply_code not in _REQUEST_ERROR_CODES:
        detail = f" replyCode {env.reply_code}: {env.reply_text[:100]}" if env.reply_code is not None else ""
        return backoff(f"{what}: HTTP {status}{detail}", ambiguous=status not in (502, 503, 504))
    if status == 401:
        return Decision(error=AuthError(_auth_message(env, response, settings, wall_clock)))
    if status == 403:
        return Decision(error=PermissionDenied(
            f"the Emarsys API user {settings.user!r} lacks a permission: {what} answered HTTP 403 "
            f"({env.reply_text or 'Forbidden'}); enable {_permission(method, path)} for this API user "
            "(Emarsys: Management > Security Settings > API credentials)"))
    if status >= 300 or env.reply_code not in (0, None):
        message = f"{what}: HTTP {status}, replyCode {env.reply_code}: {env.reply_text or '(no text)'}"
        kind = RequestRejected
        if env.reply_code == 3005:
            kind = ContactListExists
        elif env.reply_code == 3006 or (env.reply_code == 3004 and re.match(r"^/contactlist/\d+/", path)):
            kind = ContactListNotFound
        return Decision(error=kind(message, status, env.reply_code, data=env.data))
    if env.reply_code is None:
        return backoff(f"{what}: HTTP {status} with a body that is not an Emarsys envelope", True)
    return Decision(envelope=env)


def _bounded(decision: Decision, elapsed: float, policy: RetryPolicy, what: str) -> Decision:
    if elapsed + (decision.wait or 0.0) > policy.timeout_seconds:
        return Decision(error=TransientError(
            f"{what}: gave up after {elapsed:.0f}s, as waiting {decision.wait:.0f}s more would pass the "
            f"{policy.timeout_seconds:.0f}s limit; last failure: {decision.reason}"), reason=decision.reason)
    return decision


def _auth_message(env: Envelope, response: httpx.Response, settings: EmarsysSettings, wall_clock) -> str:
    text = env.reply_text or "Unauthorized"
    if settings.scheme == "wsse" and is_time_frame_error(response):
        server_now = server_time(response.headers)
        if server_now is not None:
            skew = wall_clock() - server_now
            detail = (f"this machine's clock is {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the "
                      "Emarsys server's (from its Date header)")
        else:
            detail = "the server sent no Date header to compare clocks with"
        return ("credentials rejected: Emarsys refused the WSSE timestamp as outside its 5-minute window "
                f"({text}); {detail}. Synchronise this machine's clock (NTP).")
    names = ("EMARSYS_CLIENT_ID and EMARSYS_CLIENT_SECRET" if settings.scheme == "oauth"
             else "EMARSYS_USERNAME and EMARSYS_SECRET")
    return f"credentials rejected by Emarsys ({text}) for API user {settings.user!r}; check {names}"


def _permission(method: str, path: str) -> str:
    for m, pattern, permission in _PERMISSIONS:
        if m == method and pattern.match(path):
            return permission
    return f"the permission for {method} {path}"


def _certificate_refused(exc: BaseException) -> bool:
    """The TLS handshake failed because the server's certificate didn't verify (anywhere in the chain
    of causes httpx and httpcore wrap it in)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _short(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


class _Retry(Exception):
    """Raised inside the stamina loop for a retryable attempt; carries the wait `decide` chose."""

    def __init__(self, decision: Decision, attempt: int, attempts: int):
        super().__init__(decision.reason)
        self.decision = decision
        self.attempt = attempt
        self.attempts = attempts


def _retry_hook(exc: Exception) -> bool | float:
    """stamina's hook: retry only what `decide` said to retry, after the wait it chose."""
    if not isinstance(exc, _Retry):
        return False
    wait = exc.decision.wait or 0.0
    # A request's first retry is a warning, so a run waiting on Emarsys (down, or rate limited) says
    # why at the default log level; the following ones are info.
    level = logging.WARNING if exc.attempt == 1 else logging.INFO
    log.log(level, "retrying in %.1fs (attempt %d of %d failed): %s", wait, exc.attempt, exc.attempts,
            exc.decision.reason)
    return wait


class _OwnRetriesFilter(logging.Filter):
    """Our retries are logged at info with their reason and wait (`_retry_hook`). stamina's own
    "stamina.retry_scheduled" warning for them would repeat that, without the reason, at the default
    log level; other code's stamina retries are left alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        caused_by = str(getattr(record, "stamina.caused_by", ""))
        return not caused_by.startswith(("_Retry(", "_StillRacing("))


logging.getLogger("stamina").addFilter(_OwnRetriesFilter())

_DEFAULT = object()
# 2009 "Contact with the external id already exists" on an upsert: the documented race (§3.3).
RACE_REPLY_CODE = 2009
RACE_RETRIES = 2


class _StillRacing(Exception):
    pass


def auth_for(settings: EmarsysSettings, wall_clock=time.time) -> httpx.Auth:
    """The credentials flow of `settings`: OAuth client credentials (API v3) or WSSE (API v2)."""
    if settings.scheme == "oauth":
        return OAuthClientCredentials(settings.auth_url, settings.client_id or "", settings.client_secret or "")
    return WsseAuth(settings.username or "", settings.secret or "", clock=wall_clock)


class EmarsysClient:
    def __init__(self, settings: EmarsysSettings, *, transport: httpx.BaseTransport | None = None,
                 retry: RetryPolicy | None = None, limiter: RateLimiter | None = None,
                 max_connections: int = 16, key_guard: InFlightKeys | None = _DEFAULT,  # type: ignore
                 wall_clock=time.time, auth: httpx.Auth | None = None):
        """`auth`: share another client's credentials flow (auth_for), so a run's clients share one
        OAuth token (or one learnt WSSE clock offset) instead of fetching their own."""
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or limiter_for(settings.api_url, settings.user,
                                              settings.rate_limit_per_minute)
        # Keys being written right now: a key never rides in two requests in flight at once.
        self.key_guard = InFlightKeys() if key_guard is _DEFAULT else key_guard
        self._wall_clock = wall_clock
        self._auth: httpx.Auth = auth or auth_for(settings, wall_clock)
        self._http = httpx.Client(
            base_url=settings.base_url,
            auth=self._auth,
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_seconds, connect=min(15.0, settings.timeout_seconds)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            verify=settings.ca_bundle or True,
        )
        self._stats_lock = threading.Lock()
        self.requests_sent = 0
        self.bytes_sent = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"EmarsysClient(base_url={self.settings.base_url!r}, user={self.settings.user!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "EmarsysClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the request loop ---------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: bytes | None = None, params: dict | None = None,
                retry: RetryPolicy | None = None) -> Envelope:
        """Send one API request with rate limiting and retries; return the successful envelope, or
        raise (errors.py: what to do next depends on the class)."""
        policy = retry or self.retry
        headers = {"Content-Type": "application/json"} if body is not None else None
        started = time.monotonic()
        ambiguous = False
        try:
            for attempt in stamina.retry_context(on=_retry_hook, attempts=policy.attempts, timeout=None,
                                                 wait_initial=0.0, wait_max=0.0, wait_jitter=0.0):
                with attempt:
                    outcome = self._send_once(method, path, body, params, headers)
                    decision = decide(method, path, outcome, attempt=attempt.num,
                                      elapsed=time.monotonic() - started, policy=policy,
                                      settings=self.settings, wall_clock=self._wall_clock)
                    if decision.envelope is not None:
                        return decision.envelope
                    if decision.error is not None:
                        if isinstance(decision.error, RequestRejected):
                            decision.error.after_ambiguous_failure = ambiguous
                        raise decision.error
                    ambiguous = ambiguous or decision.ambiguous
                    if isinstance(outcome, httpx.Response) and outcome.status_code == 429:
                        # Hold the other threads' requests too: the budget is the API user's.
                        self.limiter.block_for(decision.wait or 0.0, "Emarsys answered HTTP 429")
                    with self._stats_lock:
                        self.retries += 1
                    raise _Retry(decision, attempt.num, policy.attempts)
        except _Retry as exc:
            raise TransientError(f"{method} {path}: gave up after {exc.attempt} attempts in "
                                 f"{time.monotonic() - started:.0f}s; last failure: {exc.decision.reason}"
                                 ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_once(self, method: str, path: str, body: bytes | None, params: dict | None,
                   headers: dict | None) -> httpx.Response | Exception:
        self.limiter.acquire()
        with self._stats_lock:
            self.requests_sent += 1
            self.bytes_sent += len(body or b"")
        try:
            response = self._http.request(method, path, content=body, params=params, headers=headers)
        except (httpx.RequestError, TokenEndpointUnavailable) as exc:   # transport, decoding, ...
            self.limiter.release(None)
            return exc
        except httpx.InvalidURL as exc:
            self.limiter.release(None)
            raise EmarsysConfigError(f"EMARSYS_API_URL is not a valid URL ({exc})") from None
        except BaseException:
            self.limiter.release(None)
            raise
        self.limiter.release(response.headers)
        return response

    # -- fields and the connection check -----------------------------------------------------

    def check_connection(self) -> ConnectionInfo:
        """`GET /field` (it needs only the field.get permission; `/settings` is restricted): proves the
        URL, the credentials and the permission. Raises AuthError ("credentials rejected ..."),
        PermissionDenied (naming field.get), or TransientError when Emarsys can't be reached."""
        try:
            fields = self.get_fields(retry=CONNECTION_CHECK_RETRY)
        except TransientError as exc:
            raise TransientError(f"cannot reach Emarsys at {self.settings.base_url}: {exc}") from None
        return ConnectionInfo(self.settings.base_url, self.settings.scheme, self.settings.user, len(fields))

    def get_fields(self, *, retry: RetryPolicy | None = None) -> list[dict]:
        """`GET /field`: every field of the account (`id`, `name`, `application_type`, `string_id`)."""
        data = self.request("GET", "/field", retry=retry).data
        if not isinstance(data, list):
            raise EmarsysError("GET /field returned no field list")
        return data

    def get_choices(self, field_id: int) -> list[dict]:
        """`GET /field/{id}/choice`: `[{id, choice, bit_position}]` of a choice field."""
        data = self.request("GET", f"/field/{int(field_id)}/choice").data
        return data if isinstance(data, list) else []

    # -- writing contacts ---------------------------------------------------------------------

    def upsert_contacts(self, key_id: int | str, keys: list[str], body: bytes, create: bool,
                        ) -> BatchOutcome:
        """`PUT /contact/?create_if_not_exists=0|1` with a pre-encoded batch body (batching.py).

        `keys` are the key values in the body, as sent; each ends acknowledged or rejected. A request
        that fails as a whole raises: TransientError (after retries; `exc.keys` are this request's
        keys, failed-retryable) or RequestRejected/AuthError/PermissionDenied (nothing written).

        With `create`, keys refused with 2009 "already exists" met Emarsys's documented race between
        near-simultaneous writes of one key (§3.3: retry): those contacts are sent again, alone, up to
        twice with a short backoff, before they count as rejected.
        """
        cap = max_body_bytes("PUT")
        if len(body) > cap:
            raise ValueError(f"a contact request body of {len(body)} bytes is over Emarsys's {cap}-byte "
                             "cap for PUT; build batches with batching.ContactBatcher")
        with self._holding(key_id, keys):
            try:
                outcome = self._put_contacts(keys, body, create)
            except TransientError as exc:
                raise TransientError(str(exc), keys) from None
            if create:
                self._retry_create_races(key_id, body, outcome)
        return outcome

    def _put_contacts(self, keys: list[str], body: bytes, create: bool) -> BatchOutcome:
        try:
            env = self.request("PUT", "/contact/", body=body,
                               params={"create_if_not_exists": "1" if create else "0"})
        except RequestRejected as exc:
            return _every_key_failed(keys, exc)
        data = env.data if isinstance(env.data, dict) else {}
        ids = data.get("ids") if isinstance(data.get("ids"), list) else []
        outcome = _per_key_outcome(keys, data.get("errors"))
        # Strings for updated contacts, integers for created ones (counted in C: once per batch).
        outcome.updated = sum(map(isinstance, ids, repeat(str)))
        outcome.created = sum(map(isinstance, ids, repeat(int))) - sum(map(isinstance, ids, repeat(bool)))
        return outcome

    def _retry_create_races(self, key_id: int | str, body: bytes, outcome: BatchOutcome) -> None:
        raced = [k for k, (code, _) in outcome.rejected.items() if code == RACE_REPLY_CODE]
        if not raced:
            return
        payload = orjson.loads(body)
        field_key = str(payload.get("key_id", key_id))
        by_key = {str(c.get(field_key)): c for c in payload.get("contacts", []) if isinstance(c, dict)}
        try:
            for attempt in stamina.retry_context(on=_StillRacing, attempts=RACE_RETRIES + 1, timeout=None,
                                                 wait_initial=1.0, wait_max=4.0, wait_jitter=0.5):
                with attempt:
                    log.info("%d contact(s) met Emarsys's 'already exists' race (2009); sending them again "
                             "(try %d of %d)", len(raced), attempt.num, RACE_RETRIES)
                    contacts = [by_key[k] for k in raced if k in by_key]
                    retry = self._put_contacts(raced, encode_contacts(field_key, contacts), create=True)
                    for key in retry.acknowledged:
                        outcome.rejected.pop(key, None)
                        outcome.acknowledged.append(key)
                    outcome.created += retry.created
                    outcome.updated += retry.updated
                    outcome.rejected.update(retry.rejected)
                    raced = [k for k, (code, _) in retry.rejected.items() if code == RACE_REPLY_CODE]
                    if raced:
                        raise _StillRacing()
        except (_StillRacing, TransientError):
            pass   # they stay rejected with the race's 2009, to be sent again by the next run

    def _holding(self, key_id: int | str, keys: list[str]):
        unique = set(keys)
        if len(unique) != len(keys):
            counts = Counter(keys)
            twice = next(k for k in keys if counts[k] > 1)
            raise ValueError(f"the key {twice!r} appears twice in one request")
        if self.key_guard is None:
            return nullcontext()
        return self.key_guard.hold(key_id, unique)

    # -- contact lists ------------------------------------------------------------------------

    def list_contact_lists(self) -> list[ContactList]:
        """`GET /contactlist`: every list of the account (ids come back as strings; made ints)."""
        data = self.request("GET", "/contactlist").data
        if not isinstance(data, list):
            raise EmarsysError("GET /contactlist returned no list of contact lists")
        lists = []
        for row in data:
            try:
                lists.append(ContactList(int(row["id"]), str(row["name"])))
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring a contact list entry without an id and a name: %r", row)
        return lists

    def find_contact_list(self, name: str) -> ContactList | None:
        """The list called `name`, compared trimmed and case-insensitively (as the official client
        does: Emarsys list names are unique that way)."""
        wanted = name.strip().casefold()
        for contact_list in self.list_contact_lists():
            if contact_list.name.strip().casefold() == wanted:
                return contact_list
        return None

    def create_contact_list(self, name: str) -> int:
        """`POST /contactlist` with no members; returns the new list's id. A name that is taken
        raises ContactListExists, unless our own earlier attempt of this very call created it (the
        connection dropped after Emarsys had written it): then that list's id is returned."""
        body = orjson.dumps({"name": name, "key_id": "3", "external_ids": []})
        try:
            env = self.request("POST", "/contactlist", body=body)
        except ContactListExists as exc:
            if exc.after_ambiguous_failure:
                found = self.find_contact_list(name)
                if found is not None:
                    log.info("contact list %r was created by an earlier attempt whose answer was lost; "
                             "using its id %s", name, found.id)
                    return found.id
            raise ContactListExists(
                f"a contact list named {name!r} already exists in Emarsys (replyCode 3005); list names "
                "are unique, compared case-insensitively", exc.status, exc.reply_code) from None
        data = env.data if isinstance(env.data, dict) else {}
        try:
            return int(data["id"])
        except (KeyError, TypeError, ValueError):
            raise EmarsysError(f"POST /contactlist for {name!r} returned no list id") from None

    def count_contact_list(self, list_id: int) -> int:
        """`GET /contactlist/{id}/count`: how many contacts the list holds."""
        data = self.request("GET", f"/contactlist/{int(list_id)}/count").data
        try:
            return int(data)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise EmarsysError(f"GET /contactlist/{list_id}/count returned no count") from None

    def add_to_list(self, list_id: int, key_id: int | str, keys: list[str]) -> BatchOutcome:
        """`POST /contactlist/{id}/add`. Keys whose contact doesn't exist (2008) or isn't unique (2010)
        come back rejected; the rest acknowledged. Emarsys takes at most 10,000 keys per request: send
        chunks of that size (batching.chunk_list_ids); a longer list is split here, and if any of its
        requests fails as a whole, every key of the call is failed-retryable (adding is idempotent)."""
        return self._list_members("add", list_id, key_id, keys)

    def remove_from_list(self, list_id: int, key_id: int | str, keys: list[str]) -> BatchOutcome:
        """`POST /contactlist/{id}/delete`: removes membership only; sizes as for `add_to_list`."""
        return self._list_members("delete", list_id, key_id, keys)

    def _list_members(self, action: str, list_id: int, key_id: int | str, keys: list[str]) -> BatchOutcome:
        keys = _unique(keys)
        outcome = BatchOutcome()
        if not keys:
            return outcome
        path = f"/contactlist/{int(list_id)}/{action}"
        with self._holding(key_id, keys):
            for chunk in chunk_list_ids(keys):
                body = orjson.dumps({"key_id": str(key_id), "external_ids": chunk})
                try:
                    env = self.request("POST", path, body=body)
                except TransientError as exc:
                    raise TransientError(str(exc), keys) from None
                except RequestRejected as exc:
                    part = _every_key_failed(chunk, exc)
                else:
                    data = env.data if isinstance(env.data, dict) else {}
                    part = _per_key_outcome(chunk, data.get("errors"))
                outcome.acknowledged += part.acknowledged
                outcome.rejected.update(part.rejected)
                outcome.unmatched_errors.update(part.unmatched_errors)
        return outcome

    def iter_list_member_ids(self, list_id: int, page_size: int = 10_000) -> Iterator[list[int]]:
        """`GET /contactlist/{id}/contactIds`, one page of internal contact ids at a time. Follows the
        relative `next` link, reading `$top`/`$skiptoken` out of it (the skiptoken is opaque)."""
        if not 1 <= page_size <= 100_000:
            raise ValueError("page_size must be between 1 and 100,000")
        path = f"/contactlist/{int(list_id)}/contactIds"
        params: dict[str, str] = {"$top": str(page_size)}
        seen_tokens: set[str] = set()
        while True:
            try:
                data = self.request("GET", path, params=params).data
            except RequestRejected as exc:
                if exc.status == 404 and exc.reply_code not in (3004, 3006) and \
                        not isinstance(exc, ContactListNotFound):
                    raise EndpointUnavailable(
                        f"GET {path}: HTTP 404 ({exc}); this Emarsys account doesn't serve contactIds on "
                        f"{self.settings.base_url} (Emarsys documents it on API v2, which needs WSSE "
                        "credentials)", exc.status, exc.reply_code) from None
                raise
            if not isinstance(data, dict):
                raise EmarsysError(f"GET {path} returned no page of contact ids")
            values = data.get("value") or []
            if not isinstance(values, list):
                raise EmarsysError(f"GET {path} returned contact ids that are not a list")
            try:
                page = [int(v) for v in values]
            except (TypeError, ValueError):
                raise EmarsysError(f"GET {path} returned a contact id that is not a number") from None
            if page:
                yield page
            next_link = data.get("next")
            if not next_link:
                return
            query = parse_qs(urlsplit(str(next_link)).query)
            token = (query.get("$skiptoken") or [None])[0]
            if token is None or token in seen_tokens:
                raise EmarsysError(f"GET {path}: the next link {next_link!r} doesn't move forward")
            seen_tokens.add(token)
            params = {"$top": (query.get("$top") or [str(page_size)])[0], "$skiptoken": token}

    # -- reading contacts ---------------------------------------------------------------------

    def get_contacts(self, key_id: int | str, keys: list[str], fields: list[int],
                     ) -> tuple[list[dict], dict[str, tuple[int | None, str]]]:
        """`POST /contact/getdata` for at most 1000 keys: (contact rows as returned, keyed by field id
        string plus `id`/`uid`; per-key errors such as 2008 not found or 2010 not unique). `result:
        false` (every key unparsable) is an empty result, not an error."""
        keys = _unique(keys)
        _check_read_size(keys, "/contact/getdata")
        if not keys:
            return [], {}
        body = orjson.dumps({"keyId": str(key_id), "keyValues": keys, "fields": [int(f) for f in fields]})
        data = self.request("POST", "/contact/getdata", body=body).data
        data = data if isinstance(data, dict) else {}
        result = data.get("result")
        rows = [row for row in result if isinstance(row, dict)] if isinstance(result, list) else []
        return rows, key_errors(data.get("errors"))

    def check_ids(self, key_id: int | str, keys: list[str]) -> dict[str, str]:
        """`POST /contact/checkids` for at most 1000 keys: key value -> internal contact id (as a
        string) for the keys that match exactly one contact; the others are left out."""
        keys = _unique(keys)
        _check_read_size(keys, "/contact/checkids")
        if not keys:
            return {}
        body = orjson.dumps({"key_id": str(key_id), "external_ids": keys, "get_multiple_ids": False})
        data = self.request("POST", "/contact/checkids", body=body).data
        ids = data.get("ids") if isinstance(data, dict) else None
        if not isinstance(ids, dict):
            return {}
        return {str(key): str(contact_id) for key, contact_id in ids.items()}


def _unique(keys: list[str]) -> list[str]:
    """One key never twice in one request: duplicates dropped, order kept."""
    return list(dict.fromkeys(keys))


def _check_read_size(keys: list[str], path: str) -> None:
    if len(keys) > MAX_READ_KEYS:
        raise ValueError(f"{len(keys)} keys in one {path} call; at most {MAX_READ_KEYS}")


def _every_key_failed(keys: list[str], exc: RequestRejected) -> BatchOutcome:
    """A request-level error that still names keys (Emarsys may answer a batch in which every row
    failed with a 400 carrying the usual `errors`): each key is rejected, with its own error where
    there is one and the request's otherwise. Without per-key errors the request's error stands."""
    errors = exc.data.get("errors") if isinstance(exc.data, dict) else None
    named = key_errors(errors)
    if not named or not any(k in named or k.strip().casefold() in {n.strip().casefold() for n in named}
                            for k in keys):
        raise exc
    outcome = _per_key_outcome(keys, errors)
    fallback = (exc.reply_code, f"the request failed as a whole: {exc}")
    for key in outcome.acknowledged:
        outcome.rejected[key] = fallback
    outcome.acknowledged = []
    return outcome


def _per_key_outcome(keys: list[str], errors: object) -> BatchOutcome:
    """Every key acknowledged unless `errors` names it; matched by key value, never by position.
    An error under a key we didn't send exactly is matched trimmed and case-insensitively when that
    names exactly one sent key (Emarsys may echo a normalised email); otherwise it is kept apart."""
    by_key = key_errors(errors)
    outcome = BatchOutcome()
    if not by_key:
        outcome.acknowledged = list(keys)
        return outcome
    sent = set(keys)
    for error_key in [k for k in by_key if k not in sent]:
        folded = error_key.strip().casefold()
        candidates = [k for k in keys if k.strip().casefold() == folded]
        detail = by_key.pop(error_key)
        if len(candidates) == 1 and candidates[0] not in by_key:
            by_key[candidates[0]] = detail
        else:
            outcome.unmatched_errors[error_key] = detail
    if outcome.unmatched_errors:
        log.warning("Emarsys reported errors for %d key(s) that were not in the request: %s",
                    len(outcome.unmatched_errors), ", ".join(list(outcome.unmatched_errors)[:5]))
    for key in keys:
        if key in by_key:
            outcome.rejected[key] = by_key[key]
        else:
            outcome.acknowledged.append(key)
    return outcome


def encode_contacts(key_id: int | str, contacts: list[dict]) -> bytes:
    """One request body for `upsert_contacts` (the batcher builds them incrementally instead)."""
    return orjson.dumps({"key_id": str(key_id), "contacts": contacts})
