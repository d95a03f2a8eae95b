"""The emulator's data: fields, contacts and their indexes, with Emarsys's validation rules.

Everything here is plain Python and synchronous; the HTTP layer (app.py) turns results into
envelopes. Reply codes and messages follow emarsys-api.md §2.3 and §3.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date

from .fields import TEXT_LIMITS, FieldDef, custom_field, system_fields

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMERIC_RE = re.compile(r"^-?\d{1,24}(\.\d+)?$")

FIRST_CONTACT_ID = 100_000_000
OPTIN_FIELD = 31


class ApiError(Exception):
    """A request-level error: HTTP status, replyCode, replyText."""

    def __init__(self, status: int, reply_code: int, reply_text: str):
        super().__init__(reply_text)
        self.status = status
        self.reply_code = reply_code
        self.reply_text = reply_text


@dataclass
class StoreOptions:
    # Open question 6 (emarsys-api.md §10): email key matching. Default: case-insensitive, stored as sent.
    email_case_sensitive: bool = False
    # Open question 7: over-length text. Default (the hostile choice): reject the contact with 2007.
    truncate_text: bool = False


@dataclass
class Contact:
    id: int
    uid: str
    values: dict[int, object] = field(default_factory=dict)


class Store:
    def __init__(self, options: StoreOptions | None = None, custom_fields: list[dict] | None = None):
        self.options = options or StoreOptions()
        self.lock = threading.RLock()
        self.fields: dict[int, FieldDef] = {}
        self.fields_by_string_id: dict[str, FieldDef] = {}
        for f in system_fields():
            self._add_field(f)
        from .fields import DEFAULT_CUSTOM_FIELDS

        for spec in DEFAULT_CUSTOM_FIELDS if custom_fields is None else custom_fields:
            self._add_field(custom_field(spec))
        self.contacts: dict[int, Contact] = {}
        # field id -> normalised value -> contact ids (a list: values need not be unique)
        self.index: dict[int, dict[str, list[int]]] = {
            fid: {} for fid, f in self.fields.items() if f.indexed
        }
        self.next_id = FIRST_CONTACT_ID

    # -- fields -------------------------------------------------------------------------------

    def _add_field(self, f: FieldDef) -> None:
        self.fields[f.id] = f
        if f.string_id:
            self.fields_by_string_id[f.string_id] = f

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

    # -- values -------------------------------------------------------------------------------

    def _index_key(self, fid: int, value: object) -> str:
        text = str(value)
        if fid == 3 and not self.options.email_case_sensitive:
            return text.lower()
        return text

    def validate_value(self, f: FieldDef, value: object) -> tuple[object, str | None]:
        """Return (value to store, error message or None). None and "" clear a field."""
        if f.read_only:
            return None, f"Field {f.id} is read-only"
        if value is None or value == "":
            return None, None
        t = f.application_type
        if f.id == OPTIN_FIELD:
            if value in (1, 2, "1", "2"):
                return int(value), None
            return None, f"Invalid value for field id {f.id}: opt-in accepts 1, 2 or null"
        if t in ("shorttext", "longtext", "largetext", "url", "fax"):
            if not isinstance(value, str):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = str(value)
                else:
                    return None, f"Invalid data format for field id {f.id}: Scalar expected"
            limit = TEXT_LIMITS.get(t)
            if limit is not None and len(value) > limit:
                if self.options.truncate_text:
                    return value[:limit], None
                return None, f"Value too long for field id {f.id} (max {limit} characters)"
            return value, None
        if t in ("date", "birthdate"):
            if not isinstance(value, str) or not _DATE_RE.match(value):
                return None, f"Invalid date format for field id {f.id} (valid: YYYY-MM-DD)"
            try:
                date.fromisoformat(value)
            except ValueError:
                return None, f"Invalid date format for field id {f.id} (valid: YYYY-MM-DD)"
            return value, None
        if t == "numeric":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                return None, f"Invalid value for field id {f.id}: numeric expected"
            text = str(value)
            if not _NUMERIC_RE.match(text):
                return None, f"Invalid value for field id {f.id}: numeric expected"
            return text, None
        if t == "singlechoice":
            if isinstance(value, (list, dict)):
                return None, f"Invalid data format for field id {f.id}: Scalar expected"
            if not any(str(c.id) == str(value) for c in f.choices):
                return None, f"Invalid choice id for field id {f.id}"
            return int(value), None
        if t == "multichoice":
            if not isinstance(value, list):
                return None, f"Invalid data format for field id {f.id}: Array expected"
            if not value:
                return None, f"No choice provided for field id {f.id}"
            valid = {str(c.id) for c in f.choices}
            if any(str(v) not in valid for v in value):
                return None, f"Invalid choice id for field id {f.id}"
            return [int(v) for v in value], None
        return None, f"Field {f.id} cannot be set through the API"

    # -- contacts -----------------------------------------------------------------------------

    def find(self, fid: int, value: object) -> list[int]:
        if fid in self.index:
            return list(self.index[fid].get(self._index_key(fid, value), ()))
        wanted = self._index_key(fid, value)
        return [c.id for c in self.contacts.values()
                if c.values.get(fid) is not None and self._index_key(fid, c.values[fid]) == wanted]

    def _set(self, contact: Contact, fid: int, value: object) -> None:
        old = contact.values.get(fid)
        if fid in self.index and old is not None:
            bucket = self.index[fid].get(self._index_key(fid, old))
            if bucket and contact.id in bucket:
                bucket.remove(contact.id)
        if value is None:
            contact.values.pop(fid, None)
        else:
            contact.values[fid] = value
            if fid in self.index:
                self.index[fid].setdefault(self._index_key(fid, value), []).append(contact.id)

    def create(self, values: dict[int, object]) -> Contact:
        contact = Contact(id=self.next_id, uid=secrets.token_urlsafe(8))
        self.next_id += 1
        self.contacts[contact.id] = contact
        for fid, value in values.items():
            self._set(contact, fid, value)
        return contact

    def update(self, contact: Contact, values: dict[int, object]) -> None:
        for fid, value in values.items():
            self._set(contact, fid, value)

    def upsert_batch(self, key_id: object, contacts: list[dict], create_if_not_exists: bool,
                     ) -> tuple[list[object], dict[str, dict[str, str]]]:
        """PUT /contact batch semantics (emarsys-api.md §3.3). Returns (ids, errors by key value)."""
        key_field, key_name = self._resolve_key(key_id)
        if key_field is None and create_if_not_exists:
            raise ApiError(400, 2004, "Cannot use id or uid as key on contact creation")
        ids: list[object] = []
        errors: dict[str, dict[str, str]] = {}
        with self.lock:
            for raw in contacts:
                if not isinstance(raw, dict):
                    raise ApiError(400, 1001, "One or more parameters are invalid or missing")
                key_value = self._key_value(raw, key_field, key_name)
                if key_value is None or key_value == "":
                    errors[str(key_value)] = {"2005": f"No value provided for key field: {key_name}"}
                    continue
                values, error = self._validate_contact(raw, key_field)
                if error:
                    errors[str(key_value)] = error
                    continue
                matches = self._match(key_field, key_name, key_value)
                if len(matches) > 1:
                    errors[str(key_value)] = {
                        "2010": f"More contacts found with the external id: {key_name} - {key_value}"}
                elif matches:
                    self.update(self.contacts[matches[0]], values)
                    ids.append(str(matches[0]))
                elif create_if_not_exists:
                    ids.append(self.create(values).id)
                else:
                    errors[str(key_value)] = {
                        "2008": f"No contact found with the external id: {key_name} - {key_value}"}
        return ids, errors

    def _resolve_key(self, key_id: object) -> tuple[FieldDef | None, str]:
        if key_id in ("id", "uid"):
            return None, str(key_id)
        f = self.resolve_field(key_id)
        if f is None:
            raise ApiError(400, 2004, f"Invalid key field id: {key_id}")
        return f, str(f.id)

    def _key_value(self, raw: dict, key_field: FieldDef | None, key_name: str) -> object:
        if key_field is None:
            return raw.get(key_name)
        for ref in (str(key_field.id), key_field.string_id):
            if ref is not None and ref in raw:
                return raw[ref]
        return None

    def _match(self, key_field: FieldDef | None, key_name: str, key_value: object) -> list[int]:
        if key_field is None:
            if key_name == "id":
                try:
                    cid = int(key_value)
                except (TypeError, ValueError):
                    return []
                return [cid] if cid in self.contacts else []
            return [c.id for c in self.contacts.values() if c.uid == key_value]
        return self.find(key_field.id, key_value)

    def _validate_contact(self, raw: dict, key_field: FieldDef | None,
                          ) -> tuple[dict[int, object], dict[str, str] | None]:
        values: dict[int, object] = {}
        for ref, value in raw.items():
            if ref in ("id", "uid"):
                if key_field is None:
                    continue  # the key itself when updating by id/uid
                return {}, {"2007": "Cannot set id or uid on contact creation"}
            f = self.resolve_field(ref)
            if f is None:
                return {}, {"2006": f"Invalid field id: {ref}"}
            stored, error = self.validate_value(f, value)
            if error:
                return {}, {"2007": error}
            values[f.id] = stored
        return values, None

    # -- persistence (the sandbox's --store file) --------------------------------------------------

    def dump(self) -> dict:
        with self.lock:
            return {
                "next_id": self.next_id,
                "contacts": [{"id": c.id, "uid": c.uid, "values": {str(k): v for k, v in c.values.items()}}
                             for c in self.contacts.values()],
            }

    def load(self, data: dict) -> None:
        with self.lock:
            self.contacts.clear()
            for bucket in self.index.values():
                bucket.clear()
            for item in data.get("contacts", []):
                contact = Contact(id=int(item["id"]), uid=str(item["uid"]))
                self.contacts[contact.id] = contact
                for fid, value in item.get("values", {}).items():
                    self._set(contact, int(fid), value)
            self.next_id = max(int(data.get("next_id", FIRST_CONTACT_ID)),
                               max(self.contacts, default=FIRST_CONTACT_ID - 1) + 1)

    def contact_as_api(self, contact: Contact) -> dict:
        out: dict[str, object] = {"id": contact.id, "uid": contact.uid}
        for fid, value in sorted(contact.values.items()):
            out[str(fid)] = value
        return out
