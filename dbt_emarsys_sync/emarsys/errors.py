"""Every exception the Emarsys client raises, grouped by what the caller should do next.

    EmarsysError                     base
    ├── EmarsysConfigError           settings are missing or wrong: stop before any write
    ├── AuthError                    credentials rejected (401), WSSE clock skew: stop, fix settings
    ├── PermissionDenied             the API user lacks an endpoint permission (403): stop
    ├── RequestRejected              a 4xx (or an HTTP-200 error) with a replyCode: this request will
    │   │                            never succeed as sent; don't retry it
    │   ├── ContactListExists        3005: a contact list with that name already exists
    │   ├── ContactListNotFound      3006 (or 3004 on a list's own path): the list id is unknown
    │   └── EndpointUnavailable      404 for an endpoint this API version doesn't serve
    └── TransientError               429/5xx/timeouts/connection errors that outlived the retries:
                                     the keys of that request are failed-retryable, not rejected

Rows Emarsys refuses one by one (an HTTP 200 with per-key `errors`) are not exceptions: they come back
as `BatchOutcome.rejected`. Messages never contain secrets: they name settings, not their values.
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
    def __init__(self, message: str, status: int, reply_code: int | None, *,
                 after_ambiguous_failure: bool = False, data: object = None):
        super().__init__(message)
        self.status = status
        self.reply_code = reply_code
        # The envelope's `data`: a batch in which every row failed comes back as a 400 whose data
        # still names the keys and their errors.
        self.data = data
        # An earlier attempt of the same call timed out or lost its connection after sending, so
        # Emarsys may have applied it: a "already exists" now may be our own doing.
        self.after_ambiguous_failure = after_ambiguous_failure


class ContactListExists(RequestRejected):
    pass


class ContactListNotFound(RequestRejected):
    pass


class EndpointUnavailable(RequestRejected):
    pass


class TransientError(EmarsysError):
    """A request that failed as a whole after its retries. `keys` are the key values it carried (when
    it carried any): failed-retryable, to be sent again by a later run, never counted as rejected."""

    def __init__(self, message: str, keys: list[str] | None = None):
        super().__init__(message)
        self.keys = list(keys) if keys else []
