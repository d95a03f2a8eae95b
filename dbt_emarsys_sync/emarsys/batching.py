"""Request bodies under Emarsys's limits, and the guard that keeps a key out of two requests at once.

- Contacts: at most 1000 per request and under the byte cap (8 MB for PUT, 10 MB for POST; §3.2, §3.3),
  measured on the encoded body itself, byte for byte.
- Contact-list members: at most 10,000 ids per call (§5.3); getdata/checkids: at most 1000 keys (§3.5).
- One key never twice in one request (the batcher refuses it) nor in two requests in flight at once
  (`InFlightKeys`): Emarsys processes a batch in parallel and documents a race between concurrent
  writes of one key (§3.3, §7.4).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

import orjson

T = TypeVar("T")

MAX_BATCH_CONTACTS = 1000
MAX_LIST_IDS = 10_000          # contactlist add/delete/create: more gives 3002
MAX_READ_KEYS = 1000           # contact/getdata and contact/checkids
# Emarsys writes "8 MB" and "10 MB"; the decimal reading is the smaller one, so it is safe either way.
MAX_PUT_BYTES = 8_000_000
MAX_POST_BYTES = 10_000_000
MAX_BATCH_BYTES = MAX_PUT_BYTES   # upserts are PUTs


def max_body_bytes(method: str) -> int:
    return MAX_PUT_BYTES if method.upper() == "PUT" else MAX_POST_BYTES


class ContactTooLarge(ValueError):
    """One contact whose encoding alone is over the byte cap: it can never be sent."""


class DuplicateKey(ValueError):
    """The same key added twice to one batch: Emarsys's result for it would be undefined."""


class ContactBatcher:
    """Collects encoded contacts into request bodies under the count and byte caps.

        batcher = ContactBatcher("3", 1000, MAX_BATCH_BYTES)
        for key, encoded in contacts:
            full = batcher.add(key, encoded)      # (keys, body) when a batch is complete
            ...
        last = batcher.flush()

    The size is exact: `len(body)` equals what `add` counted, and never exceeds `max_bytes`.
    """

    def __init__(self, key_id: str, max_contacts: int = MAX_BATCH_CONTACTS, max_bytes: int = MAX_BATCH_BYTES):
        self._head = b'{"key_id":' + orjson.dumps(str(key_id)) + b',"contacts":['
        self._tail = b"]}"
        self.max_contacts, self.max_bytes = max_contacts, max_bytes
        self.keys: list[str] = []
        self.parts: list[bytes] = []
        self._key_set: set[str] = set()
        self._empty = len(self._head) + len(self._tail)
        self.size = self._empty

    def add(self, key: str, encoded: bytes) -> tuple[list[str], bytes] | None:
        """Add one contact; return the full batch (keys, body) it pushed out, if any.
        Raises ContactTooLarge for a contact that can't fit even alone, DuplicateKey for a key that is
        already in the open batch (the caller decides which row wins before batching)."""
        if self._empty + len(encoded) > self.max_bytes:
            raise ContactTooLarge(f"the contact {key!r} encodes to {len(encoded)} bytes, over the "
                                  f"{self.max_bytes}-byte request cap")
        if key in self._key_set:
            raise DuplicateKey(f"the key {key!r} is already in this batch")
        full = None
        separator = 1 if self.parts else 0
        if self.parts and (len(self.parts) >= self.max_contacts
                           or self.size + separator + len(encoded) > self.max_bytes):
            full = self.flush()
            separator = 0
        self.keys.append(key)
        self._key_set.add(key)
        self.parts.append(encoded)
        self.size += separator + len(encoded)
        return full

    def flush(self) -> tuple[list[str], bytes] | None:
        if not self.parts:
            return None
        batch = (self.keys, self._head + b",".join(self.parts) + self._tail)
        self.keys, self.parts, self._key_set, self.size = [], [], set(), self._empty
        return batch


class InFlightKeys:
    """The keys of the requests in flight right now, per key field. `hold(key_id, keys)` waits until
    none of `keys` is in flight, marks them for the duration of the `with` block and releases them
    after, whatever happens:

        with guard.hold("3", keys):
            client.request(...)

    `EmarsysClient` holds the keys of every write (upsert, list add/remove) in its own guard, so callers
    get the guarantee without doing anything; the guard is also usable on its own. Holding is all or
    nothing, so two holders can never wait on each other. Not re-entrant: a thread that holds keys must
    not ask for them again."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}
        self._cond = threading.Condition()
        self.waits = 0

    @contextmanager
    def hold(self, key_id: int | str, keys: Iterable[str]) -> Iterator[None]:
        wanted = keys if isinstance(keys, (set, frozenset)) else set(keys)
        with self._cond:
            held = self._held.setdefault(str(key_id), set())
            if not held.isdisjoint(wanted):
                self.waits += 1
                while not held.isdisjoint(wanted):
                    self._cond.wait()
            held |= wanted
        try:
            yield
        finally:
            with self._cond:
                held -= wanted
                self._cond.notify_all()

    def in_flight(self, key_id: int | str) -> set[str]:
        with self._cond:
            return set(self._held.get(str(key_id), ()))


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of at most `size`, in order; streams, so a generator of keys stays lazy."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def chunk_list_ids(keys: Iterable[str], size: int = MAX_LIST_IDS) -> Iterator[list[str]]:
    """Keys for `add_to_list`/`remove_from_list`, at most 10,000 per call."""
    if size > MAX_LIST_IDS:
        raise ValueError(f"contact-list calls take at most {MAX_LIST_IDS} ids")
    return chunked(keys, size)


def chunk_read_keys(keys: Iterable[str], size: int = MAX_READ_KEYS) -> Iterator[list[str]]:
    """Keys for `get_contacts`/`check_ids`, at most 1000 per call."""
    if size > MAX_READ_KEYS:
        raise ValueError(f"getdata/checkids take at most {MAX_READ_KEYS} keys")
    return chunked(keys, size)
