"""The two ways to authenticate to Emarsys, as httpx auth flows (emarsys-api.md §1).

- `OAuthClientCredentials` (API v3, the default): a bearer token fetched with Basic auth and a form
  body, cached, refreshed before `expires_in` runs out and once more on a 401. One thread fetches while
  the others wait for its token, so a burst of requests or of 401s costs one token request.
- `WsseAuth` (API v2): a fresh nonce and `Created` on every request, and so on every retry, since the
  client sends each retry through the auth flow again. When Emarsys answers 401 "Time frame is
  invalid", the flow reads the server's clock from the `Date` header, signs with the server's time from
  then on and retries that request once (Emarsys staff suggest reading `Date` to detect the drift).
  Re-signing is cheap and exact to the second against a 5-minute window, so a CI runner with a drifting
  clock keeps working; the warning it logs still tells the operator to fix the clock.

Neither puts a secret (client secret, WSSE secret, access token) in a repr, a log line or an exception.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import threading
import time
from datetime import datetime, timezone

import httpx

from .errors import AuthError, TransientError
from .ratelimit import server_time

log = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 60
DEFAULT_TOKEN_LIFETIME = 3600
# A skew smaller than this can't be why Emarsys refused the timestamp (its window is 5 minutes).
MIN_SKEW_TO_CORRECT = 30.0


class TokenEndpointUnavailable(TransientError):
    """The token endpoint answered 429/5xx: retried like any transient failure."""


class OAuthClientCredentials(httpx.Auth):
    requires_response_body = True

    def __init__(self, token_url: str, client_id: str, client_secret: str, clock=time.monotonic):
        self.token_url = token_url
        self.client_id = client_id
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._clock = clock
        self._lock = threading.Lock()          # guards the cached token
        self._fetch_lock = threading.Lock()    # one token request at a time
        self._token: str | None = None
        self._expires_at = 0.0
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"OAuthClientCredentials(client_id={self.client_id!r}, token_url={self.token_url!r})"

    def _current(self) -> str | None:
        with self._lock:
            if self._token and self._clock() < self._expires_at:
                return self._token
        return None

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST", self.token_url,
            headers={"Authorization": self._basic, "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"},
            content=b"grant_type=client_credentials",
        )

    def _store(self, response: httpx.Response) -> str:
        status = response.status_code
        if status == 429 or status >= 500:
            raise TokenEndpointUnavailable(f"the token endpoint {self.token_url} answered HTTP {status}")
        if status in (400, 401, 403):
            raise AuthError(
                f"credentials rejected: the token endpoint {self.token_url} answered HTTP {status}; "
                "check EMARSYS_CLIENT_ID and EMARSYS_CLIENT_SECRET (and EMARSYS_AUTH_URL)"
            )
        if status >= 300:
            raise AuthError(f"the token endpoint {self.token_url} answered HTTP {status}; "
                            "check EMARSYS_AUTH_URL")
        try:
            payload = response.json()
            token = payload["access_token"]
        except (ValueError, KeyError, TypeError):
            raise AuthError(f"the token endpoint {self.token_url} returned no access_token; "
                            "check EMARSYS_AUTH_URL") from None
        if not isinstance(token, str) or not token:
            raise AuthError(f"the token endpoint {self.token_url} returned an empty access_token")
        lifetime = payload.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) \
            and lifetime > 0 else DEFAULT_TOKEN_LIFETIME
        # Refresh a minute early, or halfway through a token shorter than two minutes.
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
        with self._lock:
            self._token, self._expires_at = token, self._clock() + lifetime - margin
            self.tokens_fetched += 1
        return token

    def _fresh_token(self, stale: str | None):
        """A token newer than `stale` (a generator: it may yield the token request). The fetch lock is
        held across the yield: threads arriving meanwhile wait, then reuse the token just fetched.
        httpx closes the flow even when the request fails, which releases the lock."""
        with self._fetch_lock:
            current = self._current()
            if current is not None and current != stale:
                return current
            response = yield self._token_request()
            response.read()
            return self._store(response)

    def sync_auth_flow(self, request: httpx.Request):
        token = self._current()
        if token is None:
            token = yield from self._fresh_token(None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            response.read()
            # The token expired early or was revoked: one fresh token, one more try. A 401 after that
            # is the client's to report ("credentials rejected").
            token = yield from self._fresh_token(token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def auth_flow(self, request: httpx.Request):  # pragma: no cover - the client is synchronous
        raise NotImplementedError("OAuthClientCredentials supports the synchronous httpx.Client only")


class WsseAuth(httpx.Auth):
    requires_response_body = True

    def __init__(self, username: str, secret: str, clock=time.time, correct_skew: bool = True):
        self.username = username
        self._secret = secret
        self._clock = clock
        self.correct_skew = correct_skew
        # Seconds to add to our clock, learnt from the server's Date header after a skew 401.
        self.clock_offset = 0.0

    def __repr__(self) -> str:
        return f"WsseAuth(username={self.username!r})"

    def header(self, offset: float | None = None) -> str:
        nonce = secrets.token_hex(16)
        offset = self.clock_offset if offset is None else offset
        created = datetime.fromtimestamp(self._clock() + offset, tz=timezone.utc)
        created_text = created.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        digest = wsse_digest(nonce, created_text, self._secret)
        return (f'UsernameToken Username="{self.username}", PasswordDigest="{digest}", '
                f'Nonce="{nonce}", Created="{created_text}"')

    def auth_flow(self, request: httpx.Request):
        signed_with = self.clock_offset
        request.headers["X-WSSE"] = self.header(signed_with)
        response = yield request
        if response.status_code != 401 or not self.correct_skew or not is_time_frame_error(response):
            return
        if self.clock_offset != signed_with:
            # A request sent at the same time learnt the server's time while this one was in flight:
            # sign with it and try once more (the check below would wrongly blame another cause).
            request.headers["X-WSSE"] = self.header()
            yield request
            return
        server_now = server_time(response.headers)
        if server_now is None:
            return
        skew = self._clock() - server_now          # > 0: our clock is ahead of the server's
        if abs(skew + self.clock_offset) < MIN_SKEW_TO_CORRECT:
            return   # we already sign with the server's time: the refusal has another cause
        self.clock_offset = -skew
        log.warning("this machine's clock is %.0fs %s the Emarsys server's (its Date header), outside the "
                    "5-minute WSSE window; signing with the server's time from now on and retrying. "
                    "Synchronise this machine's clock (NTP).", abs(skew), "ahead of" if skew > 0 else "behind")
        request.headers["X-WSSE"] = self.header()
        yield request


def is_time_frame_error(response: httpx.Response) -> bool:
    """Emarsys's 401 for a WSSE `Created` outside its 5-minute window ("Time frame is invalid")."""
    try:
        text = response.content[:500].decode("utf-8", "replace").lower()
    except httpx.ResponseNotRead:
        return False
    return "time frame" in text


def wsse_digest(nonce: str, created: str, secret: str) -> str:
    """base64 of the lowercase hex SHA-1 of nonce + created + secret: 56 characters ending in '=='."""
    hex_sha1 = hashlib.sha1((nonce + created + secret).encode()).hexdigest()
    return base64.b64encode(hex_sha1.encode()).decode()
