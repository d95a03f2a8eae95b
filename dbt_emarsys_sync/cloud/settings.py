"""dbt Cloud settings, read from the environment only (tokens and secrets never come from files).

    DBT_CLOUD_URL                      the account's access URL (default https://cloud.getdbt.com)
    DBT_CLOUD_ACCOUNT_ID               the account id (a number)
    DBT_CLOUD_API_TOKEN                a service token (or personal access token) for the Admin API
    DBT_CLOUD_WEBHOOK_SECRET           the webhook's secret (`serve` only; it refuses to start without)
    DBT_CLOUD_JOB_IDS                  optional allow-list of job ids, comma separated (`serve` only)
    DBT_CLOUD_ENVIRONMENT_IDS          optional allow-list of environment ids (`serve` only)
    DBT_CLOUD_SYNC_AFTER_FAILED_RUNS   `true`: also sync after a failed run, only the models that
                                       succeeded (default `false`: only after successful runs)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from .errors import CloudConfigError

DEFAULT_URL = "https://cloud.getdbt.com"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class AdminApiSettings:
    """Where the Admin API is and who we are."""

    account_id: int
    token: str = field(repr=False)
    url: str = DEFAULT_URL
    timeout_seconds: float = 60.0

    @property
    def account_base(self) -> str:
        return f"{self.url.rstrip('/')}/api/v2/accounts/{self.account_id}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AdminApiSettings":
        env = os.environ if env is None else env
        missing = [name for name in ("DBT_CLOUD_ACCOUNT_ID", "DBT_CLOUD_API_TOKEN") if not env.get(name)]
        if missing:
            raise CloudConfigError(
                f"missing dbt Cloud settings: {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set (the Admin API needs the account id "
                "and a service token with read access to runs and artifacts)")
        url = (env.get("DBT_CLOUD_URL") or DEFAULT_URL).strip()
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise CloudConfigError(f"DBT_CLOUD_URL must be the account's access URL, e.g. "
                                   f"https://cloud.getdbt.com, got {url!r}")
        if parts.path.rstrip("/"):
            raise CloudConfigError(f"DBT_CLOUD_URL must be the access URL only (no path), got {url!r}")
        return cls(account_id=_positive_int(env, "DBT_CLOUD_ACCOUNT_ID"),
                   token=env["DBT_CLOUD_API_TOKEN"].strip(), url=url.rstrip("/"))


@dataclass(frozen=True)
class RunPolicy:
    """Which dbt Cloud runs may be synced. The allow-lists apply to webhook deliveries only: a run named
    on the command line was chosen on purpose."""

    sync_after_failed_runs: bool = False
    job_ids: frozenset[int] = frozenset()           # empty: every job
    environment_ids: frozenset[int] = frozenset()   # empty: every environment

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "RunPolicy":
        env = os.environ if env is None else env
        return cls(sync_after_failed_runs=_bool(env, "DBT_CLOUD_SYNC_AFTER_FAILED_RUNS"),
                   job_ids=_id_set(env, "DBT_CLOUD_JOB_IDS"),
                   environment_ids=_id_set(env, "DBT_CLOUD_ENVIRONMENT_IDS"))


@dataclass(frozen=True)
class ServiceSettings:
    """Everything `serve` reads from the environment."""

    webhook_secret: str = field(repr=False)
    api: AdminApiSettings
    policy: RunPolicy

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ServiceSettings":
        env = os.environ if env is None else env
        secret = (env.get("DBT_CLOUD_WEBHOOK_SECRET") or "").strip()
        if not secret:
            raise CloudConfigError(
                "DBT_CLOUD_WEBHOOK_SECRET is not set: the service refuses to start without it, since it "
                "could not tell dbt Cloud's deliveries from anyone else's (copy the secret shown when the "
                "webhook is created)")
        return cls(webhook_secret=secret, api=AdminApiSettings.from_env(env), policy=RunPolicy.from_env(env))

    def secrets(self) -> list[str]:
        return [self.webhook_secret, self.api.token]


def _positive_int(env: Mapping[str, str], name: str) -> int:
    raw = env[name].strip()
    try:
        value = int(raw)
    except ValueError:
        raise CloudConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise CloudConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise CloudConfigError(f"{name} must be true or false, got {raw!r}")


def _id_set(env: Mapping[str, str], name: str) -> frozenset[int]:
    raw = env.get(name) or ""
    ids = set()
    for part in raw.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ids.add(int(part))
        except ValueError:
            raise CloudConfigError(f"{name} must be a comma-separated list of ids, got {raw!r}") from None
    return frozenset(ids)
