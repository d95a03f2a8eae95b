"""The two ways to authenticate to Emarsys, as httpx auth flows (emarsys-api.md §1).

- `OAuthClientCredentials` (API v3, the default): a cached bearer token, fetched with Basic auth and a
  form body, refreshed a minute before `expires_in` runs out and once more on a 401.
- `WsseAuth` (API v2): a fresh nonce and `Created` on every request, and so on every retry, since the
  client sends each retry through the auth flow again.

Neither puts a secret in a repr, a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from datetime import datetime, timezone

import httpx

from .errors import AuthError

REFRESH_MARGIN_SECONDS = 60
DEFAULT_TOKEN_LIFETIME = 3600


class OAuthClientCredentials(httpx.Auth):
    requires_response_body = True

    def __init__(self, token_url: str, client_id: str, client_secret: str, clock=time.monotonic):
        self.token_url = token_url
        self.client_id = client_id
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"OAuthClientCredentials(client_id={self.client_id!r}, token_url={self.token_url!r})"

    def _current(self) -> str | None:
        with self._lock:
            if self._token and self._clock() < self._expires_at - REFRESH_MARGIN_SECONDS:
                return self._token
        return None

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST", self.token_url,
            headers={"Authorization": self._basic, "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"},
            content=b"grant_type=client_credentials",
        )

    def _store(self, response: httpx.Response) -> str:
        if response.status_code in (400, 401, 403):
            raise AuthError(
                f"credentials rejected: the token endpoint {self.token_url} answered HTTP "
                f"{response.status_code}; check EMARSYS_CLIENT_ID and EMARSYS_CLIENT_SECRET"
            )
        if response.status_code >= 300:
            raise AuthError(f"the token endpoint {self.token_url} answered HTTP {response.status_code}")
        try:
            payload = response.json()
            token = payload["access_token"]
        except (ValueError, KeyError, TypeError):
            raise AuthError(f"the token endpoint {self.token_url} returned no access_token") from None
        lifetime = payload.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, (int, float)) else DEFAULT_TOKEN_LIFETIME
        with self._lock:
            self._token, self._expires_at = token, self._clock() + lifetime
            self.tokens_fetched += 1
        return token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def auth_flow(self, request: httpx.Request):
        token = self._current()
        if token is None:
            token = self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # The token may have expired early or been revoked: one fresh token, one more try.
            self.invalidate()
            token = self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


class WsseAuth(httpx.Auth):
    def __init__(self, username: str, secret: str, clock=time.time):
        self.username = username
        self._secret = secret
        self._clock = clock
        # Seconds to add to our clock, learnt from the server's Date header after a skew 401.
        self.clock_offset = 0.0

    def __repr__(self) -> str:
        return f"WsseAuth(username={self.username!r})"

    def header(self) -> str:
        nonce = secrets.token_hex(16)
        created = datetime.fromtimestamp(self._clock() + self.clock_offset, tz=timezone.utc)
        created_text = created.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        digest = wsse_digest(nonce, created_text, self._secret)
        return (f'UsernameToken Username="{self.username}", PasswordDigest="{digest}", '
                f'Nonce="{nonce}", Created="{created_text}"')

    def auth_flow(self, request: httpx.Request):
        request.headers["X-WSSE"] = self.header()
        yield request


def wsse_digest(nonce: str, created: str, secret: str) -> str:
    """base64 of the lowercase hex SHA-1 of nonce + created + secret: 56 characters ending in '=='."""
    hex_sha1 = hashlib.sha1((nonce + created + secret).encode()).hexdigest()
    return base64.b64encode(hex_sha1.encode()).decode()
