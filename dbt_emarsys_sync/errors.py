"""The runner's own errors and the exit codes they map to (documented in the README).

    0  every selected sync succeeded and no row was rejected
    1  the syncs ran, but some rows were rejected (see the report)
    2  configuration error: nothing was sent (bad declaration, missing credentials, unknown model...)
    3  a sync failed while running (Emarsys unreachable after retries, auth lost mid-run, ...)
    4  some selected syncs were skipped because of the last dbt build (the report says why); the others ran

When several apply: 2 (stops before anything runs) > 3 > 4 > 1 > 0.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_CONFIG = 2
EXIT_FAILED = 3
EXIT_SKIPPED = 4


class SyncError(Exception):
    exit_code = EXIT_FAILED


class ConfigError(SyncError):
    """A configuration problem, found before anything was written."""

    exit_code = EXIT_CONFIG


class SyncFailed(SyncError):
    exit_code = EXIT_FAILED
