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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .settings import Settings

WSSE_WINDOW_SECONDS = 300
_WSSE_PAIR = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


# Endpoint permissions an API user can hold (emarsys-api.md §1.4: the contact and field names are
# Emarsys's; the contact-list names are the emulator's, Emarsys documents none).
PERMISSIONS = ("field.get", "contact.create", "contact.update", "contact.delete", "contact.getdata",
               "contactlist.get", "contactlist.create", "contactlist.update", "contactlist.delete")


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

    def may(self, permission: str) -> bool:
        return self.permissions is None or permission in self.permissions

    @classmethod
    def from_dict(cls, spec: object) -> ApiUser:
        """An API user from a seed or config entry. Raises ValueError naming what is wrong."""
        if not isinstance(spec, dict):
            raise ValueError(f"an API user is an object with name, secret and scheme, not {spec!r}")
        unknown = set(spec) - {"name", "secret", "scheme", "permissions", "rate_limit"}
        name = spec.get("name")
        if unknown:
            raise ValueError(f"API user {name!r}: unknown key(s) {', '.join(sorted(unknown))}")
        if not isinstance(name, str) or not name:
            raise ValueError("an API user needs a non-empty 'name' (OAuth client id or WSSE user name)")
        if not isinstance(spec.get("secret"), str) or not spec["secret"]:
            raise ValueError(f"API user {name!r}: 'secret' must be a non-empty string")
        scheme = spec.get("scheme", "oauth")
        if scheme not in ("oauth", "wsse"):
            raise ValueError(f"API user {name!r}: 'scheme' must be 'oauth' or 'wsse', not {scheme!r}")
        permissions = spec.get("permissions")
        if permissions is not None:
            if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
                raise ValueError(f"API user {name!r}: 'permissions' must be a list of names")
            bad = [p for p in permissions if p not in PERMISSIONS]
            if bad:
                raise ValueError(f"API user {name!r}: unknown permission(s) {', '.join(bad)}; "
                                 f"known: {', '.join(PERMISSIONS)}")
            permissions = set(permissions)
        rate_limit = spec.get("rate_limit")
        if rate_limit is not None and (isinstance(rate_limit, bool) or not isinstance(rate_limit, int)
                                       or rate_limit < 0):
            raise ValueError(f"API user {name!r}: 'rate_limit' must be a whole number >= 0")
        return cls(name=name, secret=spec["secret"], scheme=scheme, permissions=permissions,
                   rate_limit=rate_limit)


class AuthFailure(Exception):
    """Authentication failed: the reply text, and the HTTP status (token endpoint: 400 or 401)."""

    def __init__(self, reply_text: str, status: int = 401):
        super().__init__(reply_text)
        self.reply_text = reply_text
        self.status = status


class Authenticator:
    """Checks credentials against the API users. `settings` (token_ttl, reject_reused_nonce) is read on
    every call, so run-time changes apply at once; `clock` is the server's clock, skew included."""

    def __init__(self, users: dict[str, ApiUser], settings: Settings | None = None,
                 clock: Callable[[], float] = time.time, token_ttl: int | None = None):
        self.users = users
        self.settings = settings if settings is not None else Settings()
        if token_ttl is not None:
            self.settings.token_ttl = token_ttl
        self.clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._nonces: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    # -- OAuth --------------------------------------------------------------------------------

    def issue_token(self, authorization: str | None, form: dict[str, str]) -> dict:
        """Token endpoint (Basic auth, form body). Raises AuthFailure with the OAuth error code."""
        if form.get("grant_type") != "client_credentials":
            raise AuthFailure("unsupported_grant_type", 400)
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
        ttl = self.settings.token_ttl
        with self._lock:
            self._tokens[token] = (client_id, self.clock() + ttl)
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}

    def expire_all_tokens(self) -> int:
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
        return count

    def check_bearer(self, authorization: str | None) -> ApiUser:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthFailure("Unauthorized")
        token = authorization[7:].strip()
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= self.clock() or entry[0] not in self.users:
            raise AuthFailure("Unauthorized")
        return self.users[entry[0]]

    # -- WSSE ---------------------------------------------------------------------------------

    def check_wsse(self, header: str | None) -> ApiUser:
        if not header or "usernametoken" not in header.lower():
            raise AuthFailure("Unauthorized")
        # Key order and key case don't matter (the official Postman script sends a lowercase nonce=).
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
        if self.settings.reject_reused_nonce:
            with self._lock:
                # Forget nonces older than the window: they can't pass the time check again anyway.
                if len(self._nonces) > 100_000:
                    cutoff = now - 2 * WSSE_WINDOW_SECONDS
                    self._nonces = {n: t for n, t in self._nonces.items() if t > cutoff}
                if (username, nonce) in self._nonces:
                    raise AuthFailure("Unauthorized nonce already used")
                self._nonces[(username, nonce)] = now
        return user

    def forget_nonces(self) -> None:
        with self._lock:
            self._nonces.clear()


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
        parsed = parsed.replace(tzinfo=timezone(timedelta(hours=1)))
    return parsed.timestamp()
