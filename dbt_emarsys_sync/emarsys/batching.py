"""Request bodies under Emarsys's limits: at most 1000 contacts and under the byte cap, measured on
the encoded body (emarsys-api.md §3.2, §3.3)."""

from __future__ import annotations

import orjson

MAX_BATCH_CONTACTS = 1000
# Emarsys caps PUT bodies at 8 MB; keep a margin for the envelope around the contacts.
MAX_BATCH_BYTES = 8 * 1024 * 1024 - 64 * 1024


class ContactBatcher:
    """Collects encoded contacts into request bodies under the count and byte caps."""

    def __init__(self, key_id: str, max_contacts: int, max_bytes: int):
        self._head = b'{"key_id":' + orjson.dumps(key_id) + b',"contacts":['
        self.max_contacts, self.max_bytes = max_contacts, max_bytes
        self.keys: list[str] = []
        self.parts: list[bytes] = []
        self.size = len(self._head) + 2

    def add(self, key: str, encoded: bytes) -> tuple[list[str], bytes] | None:
        """Add one contact; return a full batch (keys, body) when this one didn't fit."""
        full = None
        if self.parts and (len(self.parts) >= self.max_contacts
                           or self.size + len(encoded) + 1 > self.max_bytes):
            full = self.flush()
        self.keys.append(key)
        self.parts.append(encoded)
        self.size += len(encoded) + 1
        return full

    def flush(self) -> tuple[list[str], bytes] | None:
        if not self.parts:
            return None
        batch = (self.keys, self._head + b",".join(self.parts) + b"]}")
        self.keys, self.parts, self.size = [], [], len(self._head) + 2
        return batch
