"""Connection settings for Emarsys, read from the environment (never from files or meta)."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field

from .errors import EmarsysConfigError

DEFAULT_API_URL = "https://api.emarsys.net"
DEFAULT_AUTH_URL = "https://auth.emarsys.net/oauth2/token"


@dataclass(frozen=True)
class EmarsysSettings:
    """Where Emarsys is and who we are. `scheme` is "oauth" (API v3) or "wsse" (API v2)."""

    api_url: str
    scheme: str
    auth_url: str = DEFAULT_AUTH_URL
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    rate_limit_per_minute: int = 1000
    timeout_seconds: float = 120.0
    ca_bundle: str | None = None

    @property
    def base_url(self) -> str:
        return self.api_url.rstrip("/") + ("/api/v3" if self.scheme == "oauth" else "/api/v2")

    @property
    def user(self) -> str:
        """The API user this credential is, for messages and per-user rate limits."""
        return (self.client_id if self.scheme == "oauth" else self.username) or "?"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "EmarsysSettings":
        env = os.environ if env is None else env
        common = dict(
            api_url=_url(env, "EMARSYS_API_URL", DEFAULT_API_URL),
            auth_url=_url(env, "EMARSYS_AUTH_URL", DEFAULT_AUTH_URL),
            rate_limit_per_minute=_int(env, "EMARSYS_RATE_LIMIT", 1000),
            timeout_seconds=_positive_float(env, "EMARSYS_TIMEOUT", 120.0),
            ca_bundle=_ca_bundle(env),
        )
        client_id, client_secret = env.get("EMARSYS_CLIENT_ID"), env.get("EMARSYS_CLIENT_SECRET")
        username, secret = env.get("EMARSYS_USERNAME"), env.get("EMARSYS_SECRET")
        if client_id or client_secret:
            if not (client_id and client_secret):
                missing = "EMARSYS_CLIENT_SECRET" if client_id else "EMARSYS_CLIENT_ID"
                raise EmarsysConfigError(f"missing Emarsys credentials: {missing} is not set")
            return cls(scheme="oauth", client_id=client_id, client_secret=client_secret, **common)
        if username or secret:
            if not (username and secret):
                missing = "EMARSYS_SECRET" if username else "EMARSYS_USERNAME"
                raise EmarsysConfigError(f"missing Emarsys credentials: {missing} is not set")
            return cls(scheme="wsse", username=username, secret=secret, **common)
        raise EmarsysConfigError(
            "missing Emarsys credentials: set EMARSYS_CLIENT_ID and EMARSYS_CLIENT_SECRET (OAuth 2.0), "
            "or EMARSYS_USERNAME and EMARSYS_SECRET (WSSE)"
        )


def _ca_bundle(env) -> str | None:
    """EMARSYS_CA_BUNDLE, checked now: a missing or unreadable file would otherwise fail deep in the
    HTTP client's set-up, with no word of the setting."""
    path = env.get("EMARSYS_CA_BUNDLE") or None
    if path is None:
        return None
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise EmarsysConfigError(f"EMARSYS_CA_BUNDLE={path!r} can't be used as CA certificates: "
                                 f"{getattr(exc, 'strerror', None) or exc} (it must be a PEM file)") from None
    return path


def _int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EmarsysConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise EmarsysConfigError(f"{name} must be 0 (no limit) or more, got {value}")
    return value


def _positive_float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EmarsysConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise EmarsysConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _url(env, name: str, default: str) -> str:
    value = (env.get(name) or default).strip()
    if not value.lower().startswith(("https://", "http://")):
        raise EmarsysConfigError(f"{name} must start with https:// (got {value!r})")
    return value
