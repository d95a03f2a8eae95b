"""Everything that talks HTTP to Emarsys: settings, auth, the client, fields and coercion."""

from .batching import ContactBatcher, InFlightKeys, chunk_list_ids, chunk_read_keys
from .client import (BatchOutcome, ConnectionInfo, ContactList, EmarsysClient, RetryPolicy, decide,
                     encode_contacts)
from .errors import (AuthError, ContactListExists, ContactListNotFound, EmarsysConfigError, EmarsysError,
                     EndpointUnavailable,
                     PermissionDenied, RequestRejected, TransientError)
from .fields import CoercionError, CoercionOptions, EmarsysField, FieldCatalog, coerce
from .ratelimit import RateLimiter
from .settings import EmarsysSettings

__all__ = [
    "AuthError", "BatchOutcome", "CoercionError", "CoercionOptions", "ConnectionInfo", "ContactBatcher",
    "ContactList", "ContactListExists", "ContactListNotFound", "EmarsysClient", "EmarsysConfigError",
    "EmarsysError", "EmarsysField", "EndpointUnavailable", "EmarsysSettings", "FieldCatalog", "InFlightKeys", "PermissionDenied",
    "RateLimiter", "RequestRejected", "RetryPolicy", "TransientError", "chunk_list_ids", "chunk_read_keys",
    "coerce", "decide", "encode_contacts",
]
