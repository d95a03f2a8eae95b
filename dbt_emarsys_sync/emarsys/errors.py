"""Every exception the Emarsys client raises, grouped by what the caller should do next.

    EmarsysError                     base
    ├── EmarsysConfigError           settings are missing or wrong: stop before any write
    ├── AuthError                    credentials rejected (401) or clock skew: stop, fix settings
    ├── PermissionDenied             the API user lacks an endpoint permission (403): stop
    ├── RequestRejected              a 4xx with a replyCode: this request will never succeed as sent
    └── TransientError               429/5xx/timeouts/connection errors that outlived the retries:
                                     the keys of that request are failed-retryable, not rejected

Messages never contain secrets: they name settings, not their values.
"""

from __future__ import annotations


class EmarsysError(Exception):
    pass


class EmarsysConfigError(EmarsysError):
    pass


class AuthError(EmarsysError):
    pass


class PermissionDenied(EmarsysError):
    pass


class RequestRejected(EmarsysError):
    def __init__(self, message: str, status: int, reply_code: int | None):
        super().__init__(message)
        self.status = status
        self.reply_code = reply_code


class TransientError(EmarsysError):
    pass
