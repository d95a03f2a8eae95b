"""Connection settings for Emarsys, read from the environment (never from files or meta)."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from .errors import EmarsysConfigError

DEFAULT_API_URL = "https://api.emarsys.net"
DEFAULT_AUTH_URL = "https://auth.emarsys.net/oauth2/token"
EMARSYS_DOMAIN = "emarsys.net"


class MissingCredentials(EmarsysConfigError):
    """No Emarsys credential is set at all (a dry run can still diff and count without them)."""


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
    def endpoint(self) -> str:
        """Which Emarsys this is, as the state records it: the API's base URL, lower-cased, without a
        trailing slash; on a loopback host without its port (the bundled emulator, a local sandbox,
        takes a free port each time it starts)."""
        parts = urlsplit(self.api_url.strip().rstrip("/").lower())
        netloc = parts.netloc
        if parts.hostname in ("127.0.0.1", "localhost", "::1"):
            netloc = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def user(self) -> str:
        """The API user this credential is, for messages and per-user rate limits."""
        return (self.client_id if self.scheme == "oauth" else self.username) or "?"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "EmarsysSettings":
        env = os.environ if env is None else env
        api_url = _api_url(env)
        common = dict(
            api_url=api_url,
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
            _check_token_endpoint(env, api_url)
            return cls(scheme="oauth", client_id=client_id, client_secret=client_secret, **common)
        if username or secret:
            if not (username and secret):
                missing = "EMARSYS_SECRET" if username else "EMARSYS_USERNAME"
                raise EmarsysConfigError(f"missing Emarsys credentials: {missing} is not set")
            return cls(scheme="wsse", username=username, secret=secret, **common)
        raise MissingCredentials(
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


def _api_url(env) -> str:
    """EMARSYS_API_URL is the API's base: the client adds /api/v3 or /api/v2 itself, so a URL that ends
    with a version would reach /api/v3/api/v3/... and meet nothing but 404s."""
    value = _url(env, "EMARSYS_API_URL", DEFAULT_API_URL)
    parts = urlsplit(value)
    versioned = re.search(r"/api/v\d+/*$", parts.path, re.IGNORECASE)
    if versioned:
        base = parts._replace(path=parts.path[:versioned.start()], query="", fragment="").geturl()
        raise EmarsysConfigError(f"EMARSYS_API_URL must be the API's base URL, without /api/v2 or /api/v3 "
                                 f"(the runner adds the version the credentials need): set it to {base!r}")
    return value


def _is_emarsys(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == EMARSYS_DOMAIN or host.endswith("." + EMARSYS_DOMAIN)


def _check_token_endpoint(env, api_url: str) -> None:
    """API calls going somewhere other than Emarsys while the client secret goes to Emarsys's real token
    endpoint (EMARSYS_AUTH_URL left at its default) is a mix-up: refuse it rather than send the secret
    where the API calls don't go."""
    if (env.get("EMARSYS_AUTH_URL") or "").strip() or _is_emarsys(api_url):
        return
    raise EmarsysConfigError(
        f"EMARSYS_API_URL points at {urlsplit(api_url).netloc}, not Emarsys, but EMARSYS_AUTH_URL is not "
        f"set, so the client secret would go to Emarsys's token endpoint ({DEFAULT_AUTH_URL}) while the API calls "
        "go elsewhere. Set EMARSYS_AUTH_URL to the token endpoint that belongs with EMARSYS_API_URL (for the "
        f"bundled emulator: {api_url.rstrip('/')}/oauth2/token)")
