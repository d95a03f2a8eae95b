"""API users of the emulator and the two ways they authenticate (emarsys-api.md §1).

- OAuth 2.0 client credentials: `POST /oauth2/token` with Basic auth and a form body gives an opaque
  bearer token, accepted on `/api/v3` only.
- WSSE: `X-WSSE: UsernameToken Username=..., PasswordDigest=..., Nonce=..., Created=...` on `/api/v2`
  only. Digest = base64(lowercase hex(sha1(nonce + created + secret))); `Created` within 5 minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

WSSE_WINDOW_SECONDS = 300
_WSSE_PAIR = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


@dataclass
class ApiUser:
    """One Emarsys API credential: its name, secret, endpoint permissions and rate-limit budget."""

    name: str          # OAuth client id or WSSE user name
    secret: str
    scheme: str        # "oauth" or "wsse"
    permissions: set[str] | None = None   # None = every permission
    rate_limit: int | None = None          # requests per minute; None = the emulator's default

    def __repr__(self) -> str:  # never show the secret
        return f"ApiUser(name={self.name!r}, scheme={self.scheme!r})"


@dataclass
class AuthFailure(Exception):
    reply_text: str


@dataclass
class Authenticator:
    users: dict[str, ApiUser]
    token_ttl: int = 3600
    reject_reused_nonce: bool = True   # open question (§1.2): the hostile choice is the default
    clock: callable = time.time
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    _nonces: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- OAuth --------------------------------------------------------------------------------

    def issue_token(self, authorization: str | None, form: dict[str, str]) -> dict:
        """Token endpoint. Raises AuthFailure on bad client credentials or grant type."""
        if form.get("grant_type") != "client_credentials":
            raise AuthFailure("unsupported_grant_type")
        if not authorization or not authorization.lower().startswith("basic "):
            raise AuthFailure("invalid_client")
        try:
            client_id, _, secret = base64.b64decode(authorization[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AuthFailure("invalid_client") from None
        user = self.users.get(client_id)
        if user is None or user.scheme != "oauth" or not hmac.compare_digest(user.secret, secret):
            raise AuthFailure("invalid_client")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (client_id, self.clock() + self.token_ttl)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}

    def expire_all_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def check_bearer(self, authorization: str | None) -> ApiUser:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthFailure("Unauthorized")
        token = authorization[7:].strip()
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= self.clock():
            raise AuthFailure("Unauthorized")
        return self.users[entry[0]]

    # -- WSSE ---------------------------------------------------------------------------------

    def check_wsse(self, header: str | None) -> ApiUser:
        if not header or "usernametoken" not in header.lower():
            raise AuthFailure("Unauthorized")
        parts = {k.lower(): v for k, v in _WSSE_PAIR.findall(header)}
        username, digest = parts.get("username"), parts.get("passworddigest")
        nonce, created = parts.get("nonce"), parts.get("created")
        if not (username and digest and nonce and created):
            raise AuthFailure("Unauthorized")
        user = self.users.get(username)
        if user is None or user.scheme != "wsse":
            raise AuthFailure("Credentials are invalid")
        expected = wsse_digest(nonce, created, user.secret)
        if not hmac.compare_digest(expected, digest):
            raise AuthFailure("Credentials are invalid")
        created_at = parse_created(created)
        now = self.clock()
        if created_at is None or abs(now - created_at) > WSSE_WINDOW_SECONDS:
            raise AuthFailure("Unauthorized Time frame is invalid")
        if self.reject_reused_nonce:
            with self._lock:
                # Forget nonces older than the window: they can't pass the time check again anyway.
                if len(self._nonces) > 100_000:
                    cutoff = now - 2 * WSSE_WINDOW_SECONDS
                    self._nonces = {n: t for n, t in self._nonces.items() if t > cutoff}
                if (username, nonce) in self._nonces:
                    raise AuthFailure("Unauthorized nonce already used")
                self._nonces[(username, nonce)] = now
        return user


def wsse_digest(nonce: str, created: str, secret: str) -> str:
    hex_sha1 = hashlib.sha1((nonce + created + secret).encode()).hexdigest()
    return base64.b64encode(hex_sha1.encode()).decode()


def parse_created(created: str) -> float | None:
    text = created.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # Emarsys assumes its own zone (CET/CEST) for naive timestamps; we take CET (UTC+1).
        from datetime import timedelta

        parsed = parsed.replace(tzinfo=timezone(timedelta(hours=1)))
    return parsed.timestamp()
