"""The emulator's data: fields, contacts, contact lists and their indexes, with Emarsys's rules.

Everything here is plain Python and synchronous; the HTTP layer (app.py) turns results into envelopes
and `ApiError`s into request-level errors. Reply codes and messages follow emarsys-api.md §2.3, §3
(contacts) and §5 (contact lists). Behaviour the notes leave open reads the live `Settings`.

Contacts are keyed by a field (`key_id`): an integer id, a numeric string, a field's `string_id`, or
`id`/`uid`. A key field must be indexed (email, custom fields seeded with `indexed: true`), otherwise
2015. Values of a key need not be unique (several contacts may share an email), which is how 2010
happens.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import repeat
from operator import itemgetter, setitem
from typing import Any, NamedTuple

from .fields import DEFAULT_CUSTOM_FIELDS, BadValue, FieldDef, custom_field, field_spec, system_fields
from .settings import Settings

FIRST_CONTACT_ID = 100_000_000
FIRST_LIST_ID = 800_000_000
EMAIL_FIELD = 3
EMAIL_REF = "3"
OPTIN_FIELD = 31
MAX_LIST_IDS = 10_000          # contactlist add/delete/replace/create (3002)
MAX_CONTACT_KEYS = 1000        # checkids (2002), getdata (10001), delete (1000)
LIST_NAME_MAX = 255
_LIST_NAME_FORBIDDEN = set('<>"\\')

# StoreOptions was the store's first settings object; the live Settings replaced it (same fields).
StoreOptions = Settings


class ApiError(Exception):
    """A request-level error: HTTP status, replyCode, replyText (and the envelope's `data`)."""

    def __init__(self, status: int, reply_code: int, reply_text: str, data: Any = ""):
        super().__init__(reply_text)
        self.status = status
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.data = data


class Contact(NamedTuple):
    """One contact: its values keyed by field id as a string ("3"), as on the wire, so that a
    contact object of a request can be stored as it is. A tuple, so that the garbage collector stops
    tracking it (its values hold only strings and numbers): millions of contacts cost no collection
    time."""

    id: int
    uid: str
    values: dict[str, object]


@dataclass
class ContactList:
    id: int
    name: str
    description: str
    created: str
    members: dict[int, None] = field(default_factory=dict)   # an insertion-ordered set of contact ids
    in_combined_segment: bool = False


@dataclass(frozen=True)
class Key:
    """What `key_id` names: a field (`field` set) or the internal `id` / `uid`."""

    name: str                  # "3", "5002", "id" or "uid": the name used in messages
    field: FieldDef | None
    refs: tuple[str, ...]      # where a contact object carries the key value


def _server_zone() -> timezone:
    """Emarsys answers timestamps in its own local time without an offset (emarsys-api.md §4.5)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo("Europe/Vienna")  # type: ignore[return-value]
    except ZoneInfoNotFoundError:  # no tz database on this machine
        return timezone(timedelta(hours=1))


SERVER_ZONE = _server_zone()


def _error(code: int, message: str) -> dict[str, str]:
    return {str(code): message}


class Store:
    def __init__(self, options: Settings | None = None, custom_fields: list[dict] | None = None,
                 clock=time.time):
        self.options = options if options is not None else Settings()
        self.fast_path = True   # False: every batch row by row (tests compare the two)
        self.clock = clock
        self.lock = threading.RLock()
        self._custom_field_specs = DEFAULT_CUSTOM_FIELDS if custom_fields is None else custom_fields
        self.reset()

    def reset(self) -> None:
        """Back to an empty account: the configured fields, no contacts, no lists."""
        with self.lock:
            self.fields: dict[int, FieldDef] = {}
            self.fields_by_string_id: dict[str, FieldDef] = {}
            self.seeded_fields: list[dict] = []
            for f in system_fields():
                self._add_field(f)
            for spec in self._custom_field_specs:
                self._add_field(custom_field(spec))
            self.index = {}
            self.contacts: dict[int, Contact] = {}
            # uid -> contact id, built on the first lookup by uid (rare), kept up to date afterwards
            self._uids: dict[str, int] | None = None
            self._rebuild_refs()
            self.hidden_until: dict[int, float] = {}        # read-after-write lag, contacts
            self.lists: dict[int, ContactList] = {}
            self.list_hidden_until: dict[int, float] = {}   # read-after-write lag, lists
            self.next_id = FIRST_CONTACT_ID
            self.next_list_id = FIRST_LIST_ID

    # -- fields -------------------------------------------------------------------------------

    def _add_field(self, f: FieldDef) -> None:
        if f.id in self.fields:
            raise ValueError(f"field id {f.id} already exists")
        if f.string_id and f.string_id in self.fields_by_string_id:
            raise ValueError(f"field string_id {f.string_id!r} already exists")
        self.fields[f.id] = f
        if f.string_id:
            self.fields_by_string_id[f.string_id] = f

    def add_custom_fields(self, specs: list[dict]) -> list[int]:
        """Seed custom fields (all or none). Raises ValueError naming the bad field."""
        with self.lock:
            built = [custom_field(spec) for spec in specs]
            ids = [f.id for f in built]
            string_ids = [f.string_id for f in built if f.string_id]
            for f in built:
                if f.id in self.fields or ids.count(f.id) > 1:
                    raise ValueError(f"custom field {f.id}: that field id already exists")
                if f.string_id and (f.string_id in self.fields_by_string_id
                                    or string_ids.count(f.string_id) > 1):
                    raise ValueError(f"custom field {f.id}: string_id {f.string_id!r} already exists")
            for f in built:
                self._add_field(f)
                self.seeded_fields.append(field_spec(f))
            self._rebuild_refs()
            return ids

    def _rebuild_refs(self) -> None:
        """Lookup tables for field keys in contact objects, and the indexes of indexed fields."""
        self._refs_numeric = {str(fid): f for fid, f in self.fields.items()}
        self._refs_all = dict(self._refs_numeric)
        for sid, f in self.fields_by_string_id.items():
            self._refs_all.setdefault(sid, f)
        for fid, f in self.fields.items():
            if f.indexed and fid not in self.index:
                self.index[fid] = {}
        self.reindex()

    def field_refs(self) -> dict[str, FieldDef]:
        """Field keys accepted inside contact objects: numeric ids, plus string ids when allowed."""
        return self._refs_all if self.options.string_field_ids else self._refs_numeric

    def resolve_field(self, ref: object) -> FieldDef | None:
        """A field named by integer id, numeric string or string_id, as Emarsys accepts them."""
        if isinstance(ref, bool):
            return None
        if isinstance(ref, int):
            return self.fields.get(ref)
        if isinstance(ref, str):
            if ref.isdigit():
                return self.fields.get(int(ref))
            return self.fields_by_string_id.get(ref)
        return None

    # -- keys and lookups ---------------------------------------------------------------------

    def key(self, key_id: object) -> Key:
        """Resolve `key_id`. Raises 400 2004 for an unknown field, 2015 for one without an index."""
        if key_id in ("id", "uid"):
            return Key(str(key_id), None, (str(key_id),))
        f = self.resolve_field(key_id)
        if f is None:
            raise ApiError(400, 2004, f"Invalid key field id: {key_id}")
        if not f.indexed:
            raise ApiError(400, 2015, f"No index on column: {f.id}")
        refs = (str(f.id), f.string_id) if (f.string_id and self.options.string_field_ids) else (str(f.id),)
        if isinstance(key_id, str) and not key_id.isdigit() and key_id not in refs:
            refs = refs + (key_id,)   # key_id "email": the contact may carry "email"
        return Key(str(f.id), f, refs)

    def _norm(self, fid: int, value: object) -> str:
        text = value if value.__class__ is str else str(value)
        if fid == EMAIL_FIELD:
            if self.options.email_trim_whitespace:
                text = text.strip()
            if not self.options.email_case_sensitive:
                text = text.lower()
        return text

    def reindex(self) -> None:
        """Rebuild every index (after a change of the email matching settings)."""
        with self.lock:
            for fid in self.index:
                # normalised value -> ids of the contacts holding it (values need not be unique;
                # tuples, not lists, so that the garbage collector doesn't track them)
                bucket: dict[str, tuple[int, ...]] = {}
                ref = str(fid)
                for c in self.contacts.values():
                    value = c.values.get(ref)
                    if value is not None:
                        norm = self._norm(fid, value)
                        bucket[norm] = bucket.get(norm, ()) + (c.id,)
                self.index[fid] = bucket

    def lookup(self, key: Key, value: object) -> list[int]:
        """Ids of every contact whose key equals `value`, visible or not."""
        if key.field is not None:
            return list(self.index[key.field.id].get(self._norm(key.field.id, value), ()))
        if key.name == "id":
            try:
                cid = int(value)
            except (TypeError, ValueError):
                return []
            return [cid] if cid in self.contacts else []
        cid = self.uids.get(str(value))
        return [cid] if cid is not None else []

    @property
    def uids(self) -> dict[str, int]:
        """uid -> contact id."""
        if self._uids is None:
            self._uids = {c.uid: cid for cid, c in self.contacts.items()}
        return self._uids

    def visible(self, cid: int, now: float) -> bool:
        hidden = self.hidden_until.get(cid)
        if hidden is None:
            return True
        if hidden <= now:
            del self.hidden_until[cid]
            return True
        return False

    def _find_one(self, key: Key, value: object, now: float,
                  ) -> tuple[int | None, tuple[int, str] | None]:
        """(contact id, None) or (None, (code, message)) for a read of one key value."""
        if not _is_key_value(value):
            return None, (2005, f"Invalid key field value: {value!r}")
        matches = [cid for cid in self.lookup(key, value) if self.visible(cid, now)]
        if not matches:
            return None, (2008, f"No contact found with the external id: {key.name} - {value}")
        if len(matches) > 1:
            return None, (2010, f"More contacts found with the external id: {key.name} - {value}")
        return matches[0], None

    # -- contact writes -----------------------------------------------------------------------

    def _index_add(self, contact: Contact, fid: int, value: object) -> None:
        index, norm = self.index[fid], self._norm(fid, value)
        index[norm] = index.get(norm, ()) + (contact.id,)

    def _index_remove(self, contact: Contact, fid: int, value: object) -> None:
        index, norm = self.index[fid], self._norm(fid, value)
        bucket = index.get(norm)
        if bucket and contact.id in bucket:
            rest = tuple(cid for cid in bucket if cid != contact.id)
            if rest:
                index[norm] = rest
            else:
                del index[norm]

    def _set(self, contact: Contact, fid: int, value: object) -> None:
        indexed = fid in self.index
        ref = str(fid)
        old = contact.values.get(ref)
        if indexed and old is not None:
            self._index_remove(contact, fid, old)
        if value is None:
            contact.values.pop(ref, None)
        else:
            contact.values[ref] = value
            if indexed:
                self._index_add(contact, fid, value)

    def create(self, values: dict[int, object], contact_id: int | None = None, uid: str | None = None,
               lag: bool = True) -> Contact:
        if contact_id is None:
            contact_id = self.next_id
        self.next_id = max(self.next_id, contact_id + 1)
        if uid is None:
            uid = secrets.token_urlsafe(8)
        contact = Contact(id=contact_id, uid=uid,
                          values={str(fid): v for fid, v in values.items() if v is not None})
        self.contacts[contact_id] = contact
        if self._uids is not None:
            self._uids[uid] = contact_id
        for fid in self.index:
            value = contact.values.get(str(fid))
            if value is not None:
                self._index_add(contact, fid, value)
        if lag and self.options.read_after_write_lag > 0:
            self.hidden_until[contact_id] = self.clock() + self.options.read_after_write_lag
        return contact

    def update(self, contact: Contact, values: dict[int, object]) -> None:
        index = self.index
        for fid, value in values.items():
            if fid in index or value is None:
                self._set(contact, fid, value)
            else:
                contact.values[str(fid)] = value

    def delete_contact(self, cid: int) -> None:
        contact = self.contacts.pop(cid)
        if self._uids is not None:
            self._uids.pop(contact.uid, None)
        for fid in self.index:
            value = contact.values.get(str(fid))
            if value is not None:
                self._index_remove(contact, fid, value)
        self.hidden_until.pop(cid, None)
        for contact_list in self.lists.values():
            contact_list.members.pop(cid, None)

    def _contact_values(self, raw: dict, key: Key, refs: dict[str, FieldDef], truncate: bool,
                        clears: bool) -> dict[int, object]:
        """Check one contact object's fields; raises BadValue with the row's reply code."""
        values: dict[int, object] = {}
        for ref, value in raw.items():
            f = refs.get(ref)
            if f is None:
                if ref in ("id", "uid"):
                    if key.field is None and ref == key.name:
                        continue   # the key itself, when updating by id/uid
                    raise BadValue(2007, "Cannot set id or uid on contact creation")
                raise BadValue(2006, f"Invalid field id: {ref}")
            if value is None:
                if f.read_only:
                    f.coerce(value, truncate)
                values[f.id] = None
            elif value == "" and value.__class__ is str:
                if f.read_only:
                    f.coerce(value, truncate)
                if clears:
                    values[f.id] = None
            else:
                values[f.id] = f.coerce(value, truncate)
        return values

    def write_contacts(self, key_id: object, contacts: list, *, create: bool, update: bool,
                       race: bool = False, list_id: object = None, keys_out: list[str] | None = None,
                       ) -> tuple[list[object], dict[str, dict[str, str]]]:
        """Create (POST: create only) or update/upsert (PUT) a batch (emarsys-api.md §3.2, §3.3).

        Returns (ids, errors by key value as sent): integer ids for created contacts, string ids for
        updated ones. `race` is the "already exists" fault: keys that don't exist yet fail with 2009
        without creating. `keys_out` receives every row's key value (for the request log). Raises
        ApiError for request-level errors."""
        key = self.key(key_id)
        if create and key.field is None:
            raise ApiError(400, 2004, "Cannot use id or uid as key on contact creation")
        options = self.options
        truncate, clears = options.truncate_text, options.empty_string_clears
        duplicates_policy = options.duplicate_keys_in_batch
        refs = self.field_refs()
        key_refs = key.refs
        ids: list[object] = []
        errors: dict[str, dict[str, str]] = {}
        with self.lock:
            target_list = self._list_for_contact_write(list_id)
            now = self.clock()
            fast = self._write_fast(key, contacts, create, update, race, now) if self.fast_path else None
            if fast is not None:
                ids, errors, identified, labels = fast
                if keys_out is not None:
                    keys_out.extend(labels)
                if target_list is not None:
                    target_list.members.update(dict.fromkeys(identified))
                return ids, errors
            # The general path, row by row: the reference for every rule (the fast path below
            # takes only batches it can prove give the same result).
            # Pass 1: each row's key value, and which keys repeat inside the batch.
            rows: list[tuple[dict, object]] = []
            seen: dict[str, int] = {}
            norm_fid = key.field.id if key.field is not None else None
            for raw in contacts:
                if raw.__class__ is not dict:
                    raise ApiError(400, 1001, "One or more parameters are invalid or missing")
                value = None
                for ref in key_refs:
                    value = raw.get(ref)
                    if value is not None:
                        break
                rows.append((raw, value))
                if _is_key_value(value):
                    norm = self._norm(norm_fid, value) if norm_fid is not None else str(value)
                    seen[norm] = seen.get(norm, 0) + 1
            repeated = {k for k, n in seen.items() if n > 1}
            if repeated and duplicates_policy == "first_wins":
                kept: set[str] = set()
            if repeated and duplicates_policy == "last_wins":
                last_index = {}
                for i, (_, value) in enumerate(rows):
                    if _is_key_value(value):
                        last_index[self._norm(norm_fid, value) if norm_fid is not None else str(value)] = i
            identified: list[int] = []
            for i, (raw, value) in enumerate(rows):
                label = "" if value is None else (value if value.__class__ is str else str(value))
                if keys_out is not None:
                    keys_out.append(label)
                if not _is_key_value(value):
                    errors[label] = _error(2005, f"No value provided for key field: {key.name}")
                    continue
                if repeated:
                    norm = self._norm(norm_fid, value) if norm_fid is not None else str(value)
                    if norm in repeated:
                        if duplicates_policy == "reject":
                            errors[label] = _error(
                                2009, f"Contact with the external id already exists: {key.name}")
                            continue
                        if duplicates_policy == "first_wins":
                            if norm in kept:
                                continue
                            kept.add(norm)
                        elif last_index[norm] != i:
                            continue
                try:
                    values = self._contact_values(raw, key, refs, truncate, clears)
                except BadValue as bad:
                    errors[label] = _error(bad.code, bad.message)
                    continue
                matches = self.lookup(key, value)
                if len(matches) > 1:
                    errors[label] = _error(
                        2010, f"More contacts found with the external id: {key.name} - {value}")
                elif matches:
                    cid = matches[0]
                    if not update or not self.visible(cid, now):
                        # A POST create of an existing key, or an upsert racing a create that is
                        # not visible yet: the documented "already exists" (emarsys-api.md §3.3).
                        errors[label] = _error(2009, f"Contact with the external id already exists: "
                                                     f"{key.name}")
                        continue
                    self.update(self.contacts[cid], values)
                    ids.append(str(cid))
                    identified.append(cid)
                elif create and race:
                    errors[label] = _error(2009, f"Contact with the external id already exists: {key.name}")
                elif create:
                    contact = self.create(values)
                    ids.append(contact.id)
                    identified.append(contact.id)
                else:
                    errors[label] = _error(2008, f"No contact found with the external id: {key.name} - {value}")
            if target_list is not None:
                for cid in identified:
                    target_list.members[cid] = None
        return ids, errors

    def _write_fast(self, key: Key, contacts: list, create: bool, update: bool, race: bool, now: float,
                    ) -> tuple[list, dict, list[int], list[str]] | None:
        """A batch in which every contact has the same fields, every value is plainly valid and no
        key repeats: validated column by column (loops in C), then one short loop per contact.
        Returns (ids, errors, identified contact ids, key labels), or None to use the general path.

        This is what lets the emulator take 100,000+ contacts per second (bench/emulator_ingest.py)."""
        n = len(contacts)
        if key.field is None or n == 0 or contacts[0].__class__ is not dict:
            return None
        refs = tuple(contacts[0])
        field_refs = self.field_refs()
        fdefs = [field_refs.get(ref) for ref in refs]
        key_ref = key.refs[0]
        if None in fdefs or key_ref not in refs:
            return None
        try:
            # Every row has each field of the first (itemgetter raises KeyError otherwise) and, by
            # the total count, no other: all rows have the same fields.
            if sum(map(len, contacts)) != n * len(refs):
                return None
            columns = list(zip(*map(itemgetter(*refs), contacts))) if len(refs) > 1 else \
                [tuple(c[refs[0]] for c in contacts)]
        except (KeyError, TypeError):   # a missing field, a row that is not an object
            return None
        coerced = []
        for f, column in zip(fdefs, columns):
            values = f.coerce_column(column)
            if values is None:
                return None
            coerced.append(values)
        key_fid = key.field.id
        labels = columns[refs.index(key_ref)]   # validated: non-empty strings
        if key_fid == EMAIL_FIELD and (self.options.email_trim_whitespace
                                       or not self.options.email_case_sensitive):
            norms = [self._norm(EMAIL_FIELD, v) for v in labels]
        else:
            norms = labels
        if len(set(norms)) != n:
            return None   # a key repeats: the duplicate_keys_in_batch policy decides, row by row
        fids = tuple(f.id for f in fdefs)
        keys = tuple(map(str, fids))
        # Committed to this path now. Store the request's own contact objects when they are keyed by
        # numeric field ids (the usual case), with converted values (choice ids as integers) written
        # back into them: no new dict per contact.
        if keys == refs:
            for ref, column, values in zip(refs, columns, coerced):
                if values is not column:
                    deque(map(setitem, contacts, repeat(ref), values), maxlen=0)   # a loop in C
            rows = contacts
        else:
            rows = list(map(dict, map(zip, repeat(keys), zip(*coerced))))
        index = self.index
        key_index = index[key_fid]
        other_indexed = [(pos, fid) for pos, fid in enumerate(fids) if fid in index and fid != key_fid]
        buckets = list(map(key_index.get, norms))
        hidden = self.hidden_until
        lag = self.options.read_after_write_lag
        # The two shapes of a bulk load, handled without a Python loop per contact where possible:
        # every key new (a first load), or every key naming exactly one visible contact (an update).
        if create and not race and buckets.count(None) == n and not (
                other_indexed and not self._columns_new_to_index(other_indexed, coerced, n)):
            cids = range(self.next_id, self.next_id + n)
            uids = _bulk_uids(n)
            self.next_id += n
            # tuple.__new__ builds the Contact tuples without a Python call per contact.
            self.contacts.update(zip(cids, map(tuple.__new__, repeat(Contact), zip(cids, uids, rows))))
            if self._uids is not None:
                self._uids.update(zip(uids, cids))
            key_index.update(zip(norms, zip(cids)))
            for pos, fid in other_indexed:
                index[fid].update(zip(self._index_keys(fid, coerced[pos]), zip(cids)))
            if lag > 0:
                hidden.update(dict.fromkeys(cids, now + lag))
            return list(cids), {}, list(cids), list(labels)
        if update and None not in buckets and not hidden and max(map(len, buckets)) == 1:
            cids = [bucket[0] for bucket in buckets]
            contacts = list(map(self.contacts.__getitem__, cids))
            for pos, fid in other_indexed:
                for contact, value in zip(contacts, coerced[pos]):
                    if contact.values.get(keys[pos]) != value:
                        self._set(contact, fid, value)
            for contact, row in zip(contacts, rows):
                contact.values.update(row)
            return list(map(str, cids)), {}, cids, list(labels)
        # A mix of new and existing keys: one short loop per contact.
        contacts_by_id, uids_map = self.contacts, self._uids
        uids = _bulk_uids(n) if create and not race else ()
        next_id = self.next_id
        ids: list[object] = []
        errors: dict[str, dict[str, str]] = {}
        identified: list[int] = []
        key_name = key.name
        for i, (norm, label, row, bucket) in enumerate(zip(norms, labels, rows, buckets)):
            if not bucket:
                if not create:
                    errors[label] = {"2008": f"No contact found with the external id: {key_name} - {label}"}
                    continue
                if race:
                    errors[label] = {"2009": f"Contact with the external id already exists: {key_name}"}
                    continue
                cid = next_id
                next_id += 1
                uid = uids[i]
                contacts_by_id[cid] = Contact(cid, uid, row)
                if uids_map is not None:
                    uids_map[uid] = cid
                key_index[norm] = (cid,)
                for pos, fid in other_indexed:
                    other, other_norm = index[fid], self._norm(fid, row[keys[pos]])
                    other[other_norm] = other.get(other_norm, ()) + (cid,)
                if lag > 0:
                    hidden[cid] = now + lag
                ids.append(cid)
                identified.append(cid)
            elif len(bucket) == 1:
                cid = bucket[0]
                if not update or (hidden and not self.visible(cid, now)):
                    errors[label] = {"2009": f"Contact with the external id already exists: {key_name}"}
                    continue
                contact = contacts_by_id[cid]
                for pos, fid in other_indexed:
                    self._set(contact, fid, row[keys[pos]])
                contact.values.update(row)
                ids.append(str(cid))
                identified.append(cid)
            else:
                errors[label] = {"2010": f"More contacts found with the external id: {key_name} - {label}"}
        self.next_id = next_id
        return ids, errors, identified, list(labels)

    def _index_keys(self, fid: int, values) -> list[str]:
        if fid == EMAIL_FIELD:
            return [self._norm(fid, v) for v in values]
        return [v if v.__class__ is str else str(v) for v in values]

    def _columns_new_to_index(self, other_indexed: list[tuple[int, int]], coerced: list, n: int) -> bool:
        """True when each indexed column holds distinct values none of which is indexed yet."""
        for pos, fid in other_indexed:
            keys = self._index_keys(fid, coerced[pos])
            if len(set(keys)) != n or not self.index[fid].keys().isdisjoint(keys):
                return False
        return True

    def _list_for_contact_write(self, list_id: object) -> ContactList | None:
        """`contact_list_id` of a contact request: must name an existing list (2020)."""
        if list_id is None:
            return None
        contact_list = self.lists.get(_as_int(list_id))
        if contact_list is None:
            raise ApiError(400, 2020, f"Invalid contact list id: {list_id}")
        return contact_list

    def upsert_batch(self, key_id: object, contacts: list[dict], create_if_not_exists: bool,
                     ) -> tuple[list[object], dict[str, dict[str, str]]]:
        """PUT /contact batch semantics (emarsys-api.md §3.3). Returns (ids, errors by key value)."""
        return self.write_contacts(key_id, contacts, create=create_if_not_exists, update=True)

    # -- contact reads ------------------------------------------------------------------------

    def getdata(self, key_id: object, key_values: list, field_ids: list[int] | None,
                ) -> tuple[list[dict] | bool, list[dict]]:
        """POST /contact/getdata (emarsys-api.md §3.5): (result or False, errors array)."""
        key = self.key(key_id)
        wanted = [self.fields[fid] for fid in field_ids] if field_ids else list(self.fields.values())
        result: list[dict] = []
        errors: list[dict] = []
        with self.lock:
            now = self.clock()
            for value in key_values:
                cid, error = self._find_one(key, value, now)
                if error is not None:
                    code, message = error
                    if code == 2008:
                        message = f"No contact found with the external id: {key.name}"
                    errors.append({"key": _label(value), "errorCode": str(code), "errorMsg": message})
                    continue
                contact = self.contacts[cid]
                row = {str(f.id): f.render(contact.values.get(str(f.id))) for f in wanted}
                row["id"] = str(contact.id)
                row["uid"] = contact.uid
                result.append(row)
        # emarsys-api.md §3.5: `result` is false, not an array, when no key gave a contact.
        return (result if result else False), errors

    def checkids(self, key_id: object, external_ids: list, multiple: bool, list_id: object = None,
                 ) -> tuple[dict[str, object], dict[str, dict[str, str]]]:
        """POST /contact/checkids (emarsys-api.md §3.6)."""
        key = self.key(key_id)
        ids: dict[str, object] = {}
        errors: dict[str, dict[str, str]] = {}
        with self.lock:
            members = self._list_for_contact_write(list_id)
            now = self.clock()
            for value in external_ids:
                label = _label(value)
                if not _is_key_value(value):
                    errors[label] = _error(2005, f"Invalid key field value: {value!r}")
                    continue
                matches = [cid for cid in self.lookup(key, value) if self.visible(cid, now)
                           and (members is None or cid in members.members)]
                if not matches:
                    errors[label] = _error(2008, f"No contact found with the external id: {key.name}")
                elif multiple:
                    found = [str(cid) for cid in matches]
                    ids[label] = found[0] if (len(found) == 1 and
                                              self.options.multiple_ids_shape == "mixed") else found
                elif len(matches) > 1:
                    errors[label] = _error(
                        2010, f"More contacts found with the external id: {key.name} - {value}")
                else:
                    ids[label] = str(matches[0])
        return ids, errors

    def delete_contacts(self, key_id: object, values: list, list_id: object = None,
                        ) -> tuple[int, dict[str, dict[str, str]]]:
        """POST /contact/delete (emarsys-api.md §3.8). A key matching several contacts deletes none
        of them, silently (documented)."""
        key = self.key(key_id)
        deleted = 0
        errors: dict[str, dict[str, str]] = {}
        with self.lock:
            self._list_for_contact_write(list_id)
            now = self.clock()
            for value in values:
                label = _label(value)
                if not _is_key_value(value):
                    errors[label] = _error(2005, f"Invalid key field value: {value!r}")
                    continue
                matches = [cid for cid in self.lookup(key, value) if self.visible(cid, now)]
                if not matches:
                    errors[label] = _error(2008, f"No contact found with the external id: {key.name} - {value}")
                elif len(matches) == 1:
                    self.delete_contact(matches[0])
                    deleted += 1
        return deleted, errors

    def query(self, filter_ref: str | None, filter_value: str | None, return_refs: list[str],
              limit: int, offset: int, exclude_empty: bool) -> list[dict]:
        """GET /contact/query/ (emarsys-api.md §3.7). Raises 2006 / 2015 for bad fields."""
        returned = []
        for ref in return_refs:
            f = self.resolve_field(ref)
            if f is None:
                raise ApiError(400, 2006, f"Invalid field id: {ref}")
            returned.append(f)
        with self.lock:
            now = self.clock()
            if filter_ref is None:
                candidates = sorted(self.contacts)
            else:
                key = self.key(filter_ref)
                if filter_value == "":
                    ref = str(key.field.id) if key.field else None
                    candidates = sorted(cid for cid, c in self.contacts.items()
                                        if ref is not None and c.values.get(ref) is None)
                else:
                    candidates = sorted(self.lookup(key, filter_value))
            rows = []
            for cid in candidates:
                if not self.visible(cid, now):
                    continue
                contact = self.contacts[cid]
                row: dict[str, object] = {"id": str(cid)}
                empty = False
                for f in returned:
                    value = f.render(contact.values.get(str(f.id)))
                    row[str(f.id)] = value
                    empty = empty or value in (None, "")
                if exclude_empty and empty:
                    continue
                rows.append(row)
        return rows[offset:offset + limit]

    # -- contact lists ------------------------------------------------------------------------

    def list_visible(self, list_id: int, now: float) -> bool:
        hidden = self.list_hidden_until.get(list_id)
        if hidden is None or hidden <= now:
            self.list_hidden_until.pop(list_id, None)
            return True
        return False

    def _check_list_name(self, name: object, exclude: int | None = None) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, 3001, "List name is not set")
        if self.options.strict_list_names and (
                len(name) > LIST_NAME_MAX
                or any(ch in _LIST_NAME_FORBIDDEN or ord(ch) < 32 for ch in name)):
            raise ApiError(400, 3004, "List name contains invalid character(s)")
        folded = name.strip().casefold()
        for other in self.lists.values():
            if other.id != exclude and other.name.strip().casefold() == folded:
                raise ApiError(400, 3005, "Contact list with the requested name already exists")
        return name

    def _members_for(self, key_id: object, external_ids: object,
                     ) -> tuple[list[int], dict[str, dict[str, str]]]:
        """Contacts named by `external_ids` for a list operation: never creates any (emarsys-api.md
        §5.3); unknown ones are 2008 in `errors`."""
        if not isinstance(external_ids, list):
            raise ApiError(400, 3003, "Invalid datatype for the list of external IDs. Array expected")
        if len(external_ids) > MAX_LIST_IDS:
            raise ApiError(400, 3002, "The list of external IDs exceeds the maximum size (10,000)")
        key = self.key(3 if key_id is None else key_id)
        now = self.clock()
        found: list[int] = []
        errors: dict[str, dict[str, str]] = {}
        for value in external_ids:
            cid, error = self._find_one(key, value, now)
            if error is not None:
                errors[_label(value)] = _error(*error)
            else:
                found.append(cid)
        return found, errors

    def create_list(self, name: object, description: object = None, key_id: object = None,
                    external_ids: object = None) -> tuple[int, dict | None]:
        """POST /contactlist (emarsys-api.md §5.1): (new id, errors or None when no ids were sent)."""
        with self.lock:
            name = self._check_list_name(name)
            if description is not None and (not isinstance(description, str) or (
                    self.options.strict_list_names
                    and any(ch in _LIST_NAME_FORBIDDEN or ord(ch) < 32 for ch in description))):
                raise ApiError(400, 3004, "Description contains invalid character(s)")
            found, errors = ([], None) if external_ids is None else self._members_for(key_id, external_ids)
            contact_list = ContactList(id=self.next_list_id, name=name, description=description or "",
                                       created=datetime.now(SERVER_ZONE).strftime("%Y-%m-%d %H:%M:%S"),
                                       members=dict.fromkeys(found))
            self.next_list_id += 1
            self.lists[contact_list.id] = contact_list
            lag = self.options.read_after_write_lag
            if lag > 0:
                self.list_hidden_until[contact_list.id] = self.clock() + lag
            return contact_list.id, errors

    def all_lists(self) -> list[dict]:
        """GET /contactlist (emarsys-api.md §5.2): ids as strings."""
        with self.lock:
            now = self.clock()
            return [{"id": str(cl.id), "name": cl.name, "created": cl.created, "type": 0}
                    for cl in sorted(self.lists.values(), key=lambda cl: cl.id)
                    if self.list_visible(cl.id, now)]

    def get_list(self, list_id: int, missing: str) -> ContactList:
        """The list, or the error the endpoint gives for an unknown one (`missing`: "3004"/"3006")."""
        contact_list = self.lists.get(list_id)
        if contact_list is None:
            if missing == "3004":
                raise ApiError(400, 3004, f"Invalid contact list id: {list_id}")
            raise ApiError(404, 3006, "No contact list found with the specified ID")
        return contact_list

    def add_to_list(self, list_id: int, key_id: object, external_ids: object) -> tuple[int, dict]:
        with self.lock:
            contact_list = self.get_list(list_id, "3004")
            found, errors = self._members_for(key_id, external_ids)
            inserted = 0
            for cid in found:
                if cid not in contact_list.members:
                    contact_list.members[cid] = None
                    inserted += 1
                elif self.options.count_existing_members:
                    inserted += 1
            return inserted, errors

    def remove_from_list(self, list_id: int, key_id: object, external_ids: object) -> tuple[int, dict]:
        with self.lock:
            contact_list = self.get_list(list_id, "3004")
            found, errors = self._members_for(key_id, external_ids)
            deleted = 0
            for cid in found:
                if contact_list.members.pop(cid, 0) is None:
                    deleted += 1
            return deleted, errors

    def replace_list(self, list_id: int, key_id: object, external_ids: object) -> tuple[int, dict]:
        with self.lock:
            contact_list = self.get_list(list_id, "3004")
            found, errors = self._members_for(key_id, external_ids)
            contact_list.members = dict.fromkeys(found)
            return len(contact_list.members), errors

    def rename_list(self, list_id: int, name: object) -> dict:
        with self.lock:
            contact_list = self.get_list(list_id, "3006")
            contact_list.name = self._check_list_name(name, exclude=list_id)
            return {"id": contact_list.id, "name": contact_list.name}

    def delete_list(self, list_id: int) -> None:
        with self.lock:
            contact_list = self.get_list(list_id, "3006")
            if contact_list.in_combined_segment:
                raise ApiError(400, 3008, "List used in a combined segment, cannot delete")
            del self.lists[list_id]
            self.list_hidden_until.pop(list_id, None)

    def list_member_ids(self, list_id: int, top: int, skip: int) -> tuple[list[int], bool]:
        """One page of member ids, and whether more follow."""
        with self.lock:
            members = list(self.get_list(list_id, "3006").members)
        return members[skip:skip + top], skip + top < len(members)

    # -- seeding and inspection -----------------------------------------------------------------

    def seed_contacts(self, items: list) -> list[int]:
        """Preload contacts as given (duplicate key values allowed, read-only fields settable).
        Validates every contact first; raises ValueError naming the contact and field."""
        with self.lock:
            prepared = []
            for n, item in enumerate(items):
                if not isinstance(item, dict):
                    raise ValueError(f"contacts[{n}] must be an object keyed by field id")
                cid, uid, values = item.get("id"), item.get("uid"), {}
                if cid is not None and (isinstance(cid, bool) or not isinstance(cid, int) or cid <= 0):
                    raise ValueError(f"contacts[{n}]: 'id' must be a positive integer")
                if cid is not None and (cid in self.contacts or any(p[0] == cid for p in prepared)):
                    raise ValueError(f"contacts[{n}]: contact id {cid} already exists")
                if uid is not None and (not isinstance(uid, str) or uid in self.uids):
                    raise ValueError(f"contacts[{n}]: 'uid' must be a new string")
                for ref, value in item.items():
                    if ref in ("id", "uid"):
                        continue
                    f = self.resolve_field(ref)
                    if f is None:
                        raise ValueError(f"contacts[{n}]: unknown field {ref!r}")
                    if value is None or value == "":
                        continue
                    if f.read_only:
                        values[f.id] = value
                        continue
                    try:
                        values[f.id] = f.coerce(value, False)
                    except BadValue as bad:
                        raise ValueError(f"contacts[{n}]: {bad.message}") from None
                prepared.append((cid, uid, values))
            return [self.create(values, cid, uid, lag=False).id for cid, uid, values in prepared]

    def seed_lists(self, items: list) -> list[dict]:
        """Preload contact lists: {name, description?, key_id? (3), members? (key values),
        contact_ids?, in_combined_segment?}. Raises ValueError naming the list."""
        with self.lock:
            prepared = []
            names = set()
            for n, item in enumerate(items):
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise ValueError(f"lists[{n}] must be an object with a 'name'")
                unknown = set(item) - {"name", "description", "key_id", "members", "contact_ids",
                                       "in_combined_segment"}
                if unknown:
                    raise ValueError(f"lists[{n}]: unknown key(s) {', '.join(sorted(unknown))}")
                try:
                    self._check_list_name(item["name"])
                except ApiError as err:
                    raise ValueError(f"lists[{n}] {item['name']!r}: {err.reply_text}") from None
                folded = item["name"].strip().casefold()
                if folded in names:
                    raise ValueError(f"lists[{n}] {item['name']!r}: the name appears twice in the seed")
                names.add(folded)
                ids: list[int] = []
                for cid in item.get("contact_ids") or []:
                    if cid not in self.contacts:
                        raise ValueError(f"lists[{n}] {item['name']!r}: no contact with id {cid}")
                    ids.append(cid)
                if item.get("members"):
                    try:
                        key = self.key(item.get("key_id", 3))
                    except ApiError as err:
                        raise ValueError(f"lists[{n}]: {err.reply_text}") from None
                    for value in item["members"]:
                        cid, error = self._find_one(key, value, float("inf"))
                        if error is not None:
                            raise ValueError(f"lists[{n}] {item['name']!r}: member {value!r}: {error[1]}")
                        ids.append(cid)
                prepared.append((item, ids))
            created = []
            for item, ids in prepared:
                contact_list = ContactList(
                    id=self.next_list_id, name=item["name"], description=item.get("description") or "",
                    created=datetime.now(SERVER_ZONE).strftime("%Y-%m-%d %H:%M:%S"),
                    members=dict.fromkeys(ids), in_combined_segment=bool(item.get("in_combined_segment")))
                self.next_list_id += 1
                self.lists[contact_list.id] = contact_list
                created.append({"id": contact_list.id, "name": contact_list.name})
            return created

    def contact_as_api(self, contact: Contact) -> dict:
        out: dict[str, object] = {"id": contact.id, "uid": contact.uid}
        for ref in sorted(contact.values, key=int):
            out[ref] = contact.values[ref]
        return out

    def list_as_inspection(self, contact_list: ContactList) -> dict:
        ids = list(contact_list.members)
        return {"id": contact_list.id, "name": contact_list.name, "description": contact_list.description,
                "created": contact_list.created, "contact_ids": ids,
                "emails": [self.contacts[cid].values.get(EMAIL_REF) if cid in self.contacts else None
                           for cid in ids]}

    # -- persistence (the sandbox's --store file) --------------------------------------------------

    def dump(self) -> dict:
        with self.lock:
            return {
                "next_id": self.next_id,
                "next_list_id": self.next_list_id,
                "fields": list(self.seeded_fields),
                "contacts": [{"id": c.id, "uid": c.uid, "values": dict(c.values)}
                             for c in self.contacts.values()],
                "lists": [{"id": cl.id, "name": cl.name, "description": cl.description,
                           "created": cl.created, "members": list(cl.members),
                           "in_combined_segment": cl.in_combined_segment}
                          for cl in self.lists.values()],
            }

    def load(self, data: dict) -> None:
        with self.lock:
            self.reset()
            missing = [spec for spec in data.get("fields", []) if spec.get("id") not in self.fields]
            if missing:
                self.add_custom_fields(missing)
            for item in data.get("contacts", []):
                contact = Contact(id=int(item["id"]), uid=str(item["uid"]), values={})
                self.contacts[contact.id] = contact
                if self._uids is not None:
                    self._uids[contact.uid] = contact.id
                for fid, value in item.get("values", {}).items():
                    if int(fid) in self.fields:
                        self._set(contact, int(fid), value)
            self.next_id = max(int(data.get("next_id", FIRST_CONTACT_ID)),
                               max(self.contacts, default=FIRST_CONTACT_ID - 1) + 1)
            for item in data.get("lists", []):
                contact_list = ContactList(
                    id=int(item["id"]), name=str(item["name"]), description=item.get("description", ""),
                    created=item.get("created", ""),
                    members=dict.fromkeys(cid for cid in item.get("members", []) if cid in self.contacts),
                    in_combined_segment=bool(item.get("in_combined_segment", False)))
                self.lists[contact_list.id] = contact_list
            self.next_list_id = max(int(data.get("next_list_id", FIRST_LIST_ID)),
                                    max(self.lists, default=FIRST_LIST_ID - 1) + 1)


def _bulk_uids(n: int) -> list[str]:
    """n random 8-character uids from one call to the OS's random source."""
    text = base64.urlsafe_b64encode(os.urandom(6 * n)).decode()
    return [text[i:i + 8] for i in range(0, 8 * n, 8)]


def _is_key_value(value: object) -> bool:
    """A usable key value: a non-empty string or a number (not a boolean)."""
    cls = value.__class__
    if cls is str:
        return value != ""
    return cls is int or cls is float


def _label(value: object) -> str:
    """A key value as the key of an `errors` object: as sent, as text."""
    if value is None:
        return ""
    return value if value.__class__ is str else str(value)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


__all__ = ["ApiError", "Contact", "ContactList", "Store", "StoreOptions"]
