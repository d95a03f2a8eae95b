"""Errors of the dbt Cloud integration, grouped by what the caller should do next.

    SyncError (errors.py)
    ├── ConfigError                 exit 2: nothing was sent
    │   ├── CloudConfigError        a DBT_CLOUD_* setting is missing or invalid
    │   ├── CloudAuthError          the Admin API rejected the token (401) or lacks a permission (403)
    │   ├── CloudNotFound           no such run/job/artifact in the account (404)
    │   └── RunNotSyncable          the run exists but must not be synced (still running, failed,
    │                               cancelled, no build step, or for another dbt project)
    └── CloudApiError               exit 3: the Admin API answered something we can't use
        └── CloudUnavailable        transient failures (timeouts, 5xx, 429) outlasted the retries
"""

from __future__ import annotations

from ..errors import ConfigError, SyncError


class CloudConfigError(ConfigError):
    pass


class CloudAuthError(ConfigError):
    pass


class CloudNotFound(ConfigError):
    pass


class RunNotSyncable(ConfigError):
    pass


class CloudApiError(SyncError):
    pass


class CloudUnavailable(CloudApiError):
    pass
