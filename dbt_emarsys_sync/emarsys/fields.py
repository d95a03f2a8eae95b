"""The field catalogue (what `GET /field` says) and value coercion into Emarsys field types.

Resolving: a mapping target may be a field id (`3`, `"3"`), a `string_id` (`"email"`) or a display name
(`"E-Mail"`, case-insensitive). An ambiguous name is an error that lists the candidates.

Coercing: `coerce(value, field, options)` turns any value a dbt adapter returns into what Emarsys
accepts for the field's type, or raises `CoercionError` with a reason. Never a float in between for
Decimals and big integers: every digit is kept.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

TEXT_TYPES = {"shorttext", "longtext", "largetext", "url", "fax"}
TEXT_LIMITS = {"shorttext": 60, "longtext": 255, "url": 1000, "fax": 60}
DATE_TYPES = {"date", "birthdate"}
CHOICE_TYPES = {"singlechoice", "multichoice"}
OPTIN_FIELD_ID = 31
MAX_NUMERIC_DIGITS = 24

_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}")
_NUMERIC_TEXT = re.compile(r"^-?\d+(\.\d+)?$")
_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off", "2"}


class FieldResolutionError(ValueError):
    pass


class CoercionError(ValueError):
    pass


@dataclass
class EmarsysField:
    id: int
    name: str
    application_type: str
    string_id: str | None = None
    choices: dict[str, int] = field(default_factory=dict)   # label -> choice id

    @property
    def writable(self) -> bool:
        return self.application_type in TEXT_TYPES | DATE_TYPES | CHOICE_TYPES | {"numeric"} or \
            self.id == OPTIN_FIELD_ID

    @property
    def kind(self) -> str:
        """The coercion kind: the application type, except opt-in which is its own kind."""
        return "optin" if self.id == OPTIN_FIELD_ID else self.application_type

    def label(self) -> str:
        return f"{self.name!r} (id {self.id}, {self.kind})"


class FieldCatalog:
    """The account's fields. `choice_loader(field_id)` returns `/field/{id}/choice` rows; choices are
    fetched once per field per run, on first need."""

    def __init__(self, fields: list[EmarsysField], choice_loader=None):
        self.fields = {f.id: f for f in fields}
        self.choice_loader = choice_loader
        self._choices_loaded: set[int] = set()
        self._lock = threading.Lock()

    def ensure_choices(self, fields: list[EmarsysField]) -> None:
        for f in fields:
            if f.application_type not in CHOICE_TYPES or self.choice_loader is None:
                continue
            with self._lock:
                if f.id in self._choices_loaded:
                    continue
                rows = self.choice_loader(f.id)
                f.choices = {str(r["choice"]): int(r["id"]) for r in rows
                             if isinstance(r, dict) and "choice" in r and "id" in r}
                self._choices_loaded.add(f.id)

    @classmethod
    def from_api(cls, rows: list[dict], choice_loader=None) -> "FieldCatalog":
        fields = []
        for row in rows:
            try:
                fid = int(row["id"])
            except (KeyError, TypeError, ValueError):
                continue
            fields.append(EmarsysField(
                id=fid, name=str(row.get("name") or fid),
                application_type=str(row.get("application_type") or ""),
                string_id=row.get("string_id") or None,
            ))
        return cls(fields, choice_loader)

    def resolve(self, ref: int | str) -> EmarsysField:
        if isinstance(ref, bool):
            raise FieldResolutionError(f"{ref!r} is not a field")
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
            fid = int(ref)
            if fid in self.fields:
                return self.fields[fid]
            raise FieldResolutionError(f"no Emarsys field with id {fid}")
        text = str(ref).strip()
        for f in self.fields.values():
            if f.string_id == text:
                return f
        matches = [f for f in self.fields.values()
                   if f.name.casefold() == text.casefold()
                   or (f.string_id or "").casefold() == text.casefold()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(f"{f.name!r} (id {f.id})" for f in matches)
            raise FieldResolutionError(f"the field name {text!r} is ambiguous: {names}; use the field id")
        near = _nearest(text, [f.string_id or f.name for f in self.fields.values()])
        hint = f"; did you mean {near!r}?" if near else ""
        raise FieldResolutionError(f"no Emarsys field named {text!r}{hint}")


@dataclass(frozen=True)
class CoercionOptions:
    timezone: str = "UTC"          # timestamps become dates in this zone
    truncate_text: bool = False    # over-length text: reject the row (default) or cut it

    def zone(self) -> tzinfo:
        return timezone.utc if self.timezone.upper() == "UTC" else ZoneInfo(self.timezone)


def coerce(value: object, f: EmarsysField, options: CoercionOptions = CoercionOptions()) -> object:
    """The Emarsys wire value for `value` in field `f`. `None` stays `None` (the caller's null policy
    decides between sending null and omitting the field)."""
    if value is None:
        return None
    kind = f.kind
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise CoercionError(f"{value!r} is not a number Emarsys can store")
    if kind == "optin":
        return _optin(value)
    if kind in TEXT_TYPES:
        return _text(value, f, options)
    if kind in DATE_TYPES:
        return _date(value, options)
    if kind == "numeric":
        return _numeric(value)
    if kind == "singlechoice":
        return _choice(value, f)
    if kind == "multichoice":
        items = value if isinstance(value, (list, tuple)) else _json_list(value)
        if not items:
            return None   # Emarsys refuses an empty array (2007); an empty selection clears
        return [_choice(item, f) for item in items]
    raise CoercionError(f"the field {f.label()} cannot be written through the API")


def _optin(value: object) -> int:
    if isinstance(value, bool):
        return 1 if value else 2
    if isinstance(value, (int, Decimal)) and value in (0, 1, 2):
        return 1 if value == 1 else 2
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 2
    raise CoercionError(f"{value!r} is neither clearly true nor clearly false for opt-in")


def _text(value: object, f: EmarsysField, options: CoercionOptions) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, Decimal)):
        text = _decimal_text(Decimal(value))
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, (datetime, date, time)):
        text = value.isoformat()
    elif isinstance(value, uuid.UUID):
        text = str(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise CoercionError("binary data that is not UTF-8 text") from None
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        raise CoercionError(f"a {type(value).__name__} cannot become text")
    limit = TEXT_LIMITS.get(f.application_type)
    if limit is not None and len(text) > limit:
        if options.truncate_text:
            return text[:limit]
        raise CoercionError(f"{len(text)} characters, over the field's limit of {limit}")
    return text


def _date(value: object, options: CoercionOptions) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(options.zone())
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if _DATE_TEXT.match(text):
            try:
                if len(text) == 10:
                    return date.fromisoformat(text).isoformat()
                return _date(datetime.fromisoformat(text.replace("Z", "+00:00")), options)
            except ValueError:
                pass
        raise CoercionError(f"{value!r} is not a date (YYYY-MM-DD)")
    raise CoercionError(f"a {type(value).__name__} cannot become a date")


def _numeric(value: object) -> str:
    if isinstance(value, bool):
        raise CoercionError("a boolean is not a number")
    if isinstance(value, (int, Decimal)):
        if isinstance(value, Decimal) and not value.is_finite():
            raise CoercionError(f"{value!r} is not a number Emarsys can store")
        text = _decimal_text(Decimal(value))
    elif isinstance(value, float):
        text = _decimal_text(Decimal(repr(value)))
    elif isinstance(value, str) and _NUMERIC_TEXT.match(value.strip()):
        text = value.strip()
    else:
        raise CoercionError(f"{value!r} is not a number")
    if sum(ch.isdigit() for ch in text) > MAX_NUMERIC_DIGITS:
        raise CoercionError(f"{text} has more than {MAX_NUMERIC_DIGITS} digits")
    return text


def _decimal_text(d: Decimal) -> str:
    """Plain notation, every digit kept, no exponent; trailing zeros after the point dropped."""
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _choice(value: object, f: EmarsysField) -> int:
    if isinstance(value, str):
        label = value.strip()
        if label in f.choices:
            return f.choices[label]
        folded = {k.casefold(): v for k, v in f.choices.items()}
        if label.casefold() in folded:
            return folded[label.casefold()]
        if label.isdigit() and int(label) in f.choices.values():
            return int(label)
        raise CoercionError(f"{value!r} is not a choice of {f.label()}")
    if isinstance(value, int) and not isinstance(value, bool) and value in f.choices.values():
        return value
    raise CoercionError(f"{value!r} is not a choice of {f.label()}")


def _json_list(value: object) -> list:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise CoercionError(f"{value!r} is not a list of choices") from None
            if isinstance(parsed, list):
                return parsed
        return [part for part in (p.strip() for p in text.split(",")) if part]
    return [value]


def _nearest(word: str, candidates: list[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return found[0] if found else None
