"""Everything that talks HTTP to Emarsys: settings, auth, the client, fields and coercion."""

from .client import BatchOutcome, EmarsysClient, RetryPolicy, encode_contacts
from .errors import (AuthError, EmarsysConfigError, EmarsysError, PermissionDenied, RequestRejected,
                     TransientError)
from .fields import CoercionError, CoercionOptions, EmarsysField, FieldCatalog, coerce
from .settings import EmarsysSettings

__all__ = [
    "AuthError", "BatchOutcome", "CoercionError", "CoercionOptions", "EmarsysClient", "EmarsysConfigError",
    "EmarsysError", "EmarsysField", "EmarsysSettings", "FieldCatalog", "PermissionDenied",
    "RequestRejected", "RetryPolicy", "TransientError", "coerce", "encode_contacts",
]
