"""The field catalogue (what `GET /field` says) and value coercion into Emarsys field types.

Resolving: a mapping target may be a field id (`3`, `"3"`), a `string_id` (`"email"`) or a display name
(`"E-Mail"`), compared case-insensitively. A name that fits several fields is an error listing them.

Coercing: `coerce(value, field, options)` turns any value a dbt adapter returns into what Emarsys
accepts for the field's type, or raises `CoercionError` with a reason (and nothing else, whatever the
value). The rules are one table, documented in the README ("Value coercion"):

    kind        wire value                 accepts
    text        str (length-checked)       str, numbers, bool, dates and times, UUID, bytes, lists/dicts
    date        "YYYY-MM-DD"               date, datetime (in the sync's zone; naive = UTC), ISO strings
    numeric     str, every digit kept      int, Decimal, finite float, numeric strings
    singlechoice  choice id (int)          label (exact, then case-insensitive), choice id
    multichoice   [choice id, ...]         list/tuple/set, JSON array text, "a, b" text, one label or id
    optin       1 or 2                     bool, 1/0/2, true/false/yes/no/... text

`None` stays `None`, and so does a blank string for non-text kinds: the sync's null policy (mapping.py)
then decides between clearing the field and leaving it alone. Decimals and big integers never pass
through float. UUIDs and bytes (decoded as UTF-8) are treated as their text.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone, tzinfo
from decimal import Decimal
from itertools import repeat
from operator import attrgetter
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TEXT_TYPES = frozenset({"shorttext", "longtext", "largetext", "url", "fax"})
TEXT_LIMITS = {"shorttext": 60, "longtext": 255, "url": 1000, "fax": 60}   # largetext: no limit
DATE_TYPES = frozenset({"date", "birthdate"})
CHOICE_TYPES = frozenset({"singlechoice", "multichoice"})
OPTIN_FIELD_ID = 31
MAX_NUMERIC_DIGITS = 24          # digits before the decimal point Emarsys stores (§4.5)
MAX_FRACTION_DIGITS = 64         # digits after it that we write out (more is not a real measure)
# Beyond this exponent a Decimal is written in scientific notation in text fields rather than
# expanded (1E+100000 would otherwise become 100,001 characters).
_PLAIN_EXPONENT_LIMIT = 64

_NUMBER_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0", "2"})


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
    """The account's fields. `choice_loader(field_id)` returns `/field/{id}/choice` rows; a field's
    choices are fetched once per catalogue (one catalogue per run), on first need."""

    def __init__(self, fields: list[EmarsysField], choice_loader=None):
        self.fields = {f.id: f for f in fields}
        self.choice_loader = choice_loader
        self._choices_loaded: set[int] = set()
        self._lock = threading.Lock()

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
                string_id=str(row["string_id"]) if row.get("string_id") else None,
            ))
        return cls(fields, choice_loader)

    def ensure_choices(self, fields: list[EmarsysField]) -> None:
        for f in fields:
            if f.application_type not in CHOICE_TYPES or self.choice_loader is None:
                continue
            with self._lock:
                if f.id in self._choices_loaded:
                    continue
                rows = self.choice_loader(f.id)
                choices: dict[str, int] = {}
                for row in rows:
                    try:
                        choices.setdefault(str(row["choice"]), int(row["id"]))
                    except (KeyError, TypeError, ValueError):
                        continue
                f.choices = choices
                self._choices_loaded.add(f.id)

    def resolve(self, ref: int | str) -> EmarsysField:
        """The field `ref` names: an id (int or digits), else a `string_id` (exact), else a string_id or
        display name compared case-insensitively. Several matches: an error listing them."""
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            raise FieldResolutionError(f"{ref!r} is not a field id or name")
        if isinstance(ref, int) or ref.strip().isdigit():
            fid = int(ref)
            if fid in self.fields:
                return self.fields[fid]
            raise FieldResolutionError(f"no Emarsys field with id {fid}")
        text = ref.strip()
        for f in self.fields.values():
            if f.string_id == text:
                return f
        folded = text.casefold()
        matches = [f for f in self.fields.values()
                   if f.name.strip().casefold() == folded or (f.string_id or "").casefold() == folded]
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(f"{f.name!r} (id {f.id}" + (f", string id {f.string_id!r})" if f.string_id
                                                          else ")") for f in sorted(matches, key=lambda f: f.id))
            raise FieldResolutionError(f"the field name {text!r} is ambiguous, it fits {names}; "
                                       "use the field id or string id")
        near = difflib.get_close_matches(text, [f.string_id or f.name for f in self.fields.values()],
                                         n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise FieldResolutionError(f"no Emarsys field named {text!r}{hint}")


@dataclass(frozen=True)
class CoercionOptions:
    timezone: str = "UTC"          # timestamps become dates in this zone (naive ones are read as UTC)
    truncate_text: bool = False    # over-length text: reject the row (default) or cut it

    def zone(self) -> tzinfo:
        if self.timezone.upper() == "UTC":
            return timezone.utc
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CoercionError(f"unknown time zone {self.timezone!r}") from None


def coerce(value: object, f: EmarsysField, options: CoercionOptions = CoercionOptions()) -> object:
    """The Emarsys wire value for `value` in field `f`, or CoercionError saying why there is none.
    `None` (and, for kinds other than text, a blank string) gives `None`: the caller's null policy
    decides between sending null and omitting the field."""
    if value is None:
        return None
    try:
        return _COERCERS.get(f.kind, _not_writable)(_as_text_if_textlike(value), f, options)
    except CoercionError:
        raise
    except (ValueError, TypeError, ArithmeticError, OverflowError, RecursionError) as exc:
        # A value outside what the conversions handle (a datetime at the edge of the calendar, an
        # int too long to print, ...): a rejected row, never a crashed sync.
        raise CoercionError(f"a {type(value).__name__} that cannot become {f.kind}: "
                            f"{type(exc).__name__}") from None


def _as_text_if_textlike(value: object) -> object:
    """UUIDs and bytes are their text; integers of other libraries (numpy) are ints; everything else
    is taken as it is."""
    if isinstance(value, (str, int, float, Decimal, date)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise CoercionError("binary data that is not UTF-8 text") from None
    return value


def _reject_non_finite(value: object) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise CoercionError(f"{value!r} is not a value Emarsys can store")
    if isinstance(value, Decimal) and not value.is_finite():
        raise CoercionError(f"Decimal {str(value)!r} is not a value Emarsys can store")


def _blank(value: object) -> bool:
    return isinstance(value, str) and not value.strip()


# -- text ----------------------------------------------------------------------------------------

def _text(value: object, f: EmarsysField, options: CoercionOptions) -> str:
    _reject_non_finite(value)
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, Decimal, float)):
        text = _number_text(value, plain_limit=_PLAIN_EXPONENT_LIMIT)
    elif isinstance(value, (datetime, date, time)):
        text = value.isoformat()
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        text = json.dumps(sorted(value, key=str) if isinstance(value, (set, frozenset)) else value,
                          ensure_ascii=False, default=_json_default, separators=(",", ":"))
    else:
        raise CoercionError(f"a {type(value).__name__} cannot become text")
    limit = TEXT_LIMITS.get(f.application_type)
    if limit is not None and len(text) > limit:
        if options.truncate_text:
            return text[:limit]
        raise CoercionError(f"{len(text)} characters, over the field's limit of {limit} "
                            "(set truncate_text: true to cut it instead)")
    return text


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return _number_text(value, plain_limit=_PLAIN_EXPONENT_LIMIT) if value.is_finite() else str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


# -- numbers -------------------------------------------------------------------------------------

def _number_text(value: int | Decimal | float, plain_limit: int | None = None) -> str:
    """Plain decimal notation with every digit kept: ints as they are, Decimals with their exact
    digits and scale ("12.50" stays "12.50"), floats by their shortest round-trip repr ("0.1", and "3"
    for 3.0). `plain_limit`: beyond that exponent, scientific notation instead of expanding."""
    if isinstance(value, bool):
        raise CoercionError("a boolean is not a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        d = Decimal(repr(value))
        if plain_limit is not None and abs(d.adjusted()) > plain_limit:
            return repr(value)
        if value.is_integer() and abs(value) < 1e16:
            d = d.to_integral_value()
    else:
        d = value
    if plain_limit is not None and abs(d.adjusted()) > plain_limit:
        return str(d)
    text = format(d, "f")
    return "0" if text.lstrip("-") == "0" else text


def _numeric(value: object, f: EmarsysField, options: CoercionOptions) -> str | None:
    _reject_non_finite(value)
    if isinstance(value, bool):
        raise CoercionError("a boolean is not a number (cast it to an integer in the model)")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not _NUMBER_TEXT.match(text):
            raise CoercionError(f"{_show(value)} is not a number")
        value = Decimal(text)
    if isinstance(value, int):
        if value.bit_length() > 80 or len(str(abs(value))) > MAX_NUMERIC_DIGITS:
            raise CoercionError(f"a number with more than {MAX_NUMERIC_DIGITS} digits before the point")
        return str(value)
    if not isinstance(value, (float, Decimal)):
        raise CoercionError(f"a {type(value).__name__} is not a number")
    exact = Decimal(repr(value)) if isinstance(value, float) else value
    if exact.adjusted() >= MAX_NUMERIC_DIGITS:
        raise CoercionError(f"a number with more than {MAX_NUMERIC_DIGITS} digits before the point")
    if -exact.as_tuple().exponent > MAX_FRACTION_DIGITS:   # type: ignore[operator]
        # Rounding would change the number: say so instead.
        raise CoercionError(f"a number with more than {MAX_FRACTION_DIGITS} digits after the point")
    return _number_text(value)


# -- dates ---------------------------------------------------------------------------------------

def _date(value: object, f: EmarsysField, options: CoercionOptions) -> str | None:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(options.zone()).date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _DATE_TEXT.match(text):
            try:
                return date.fromisoformat(text).isoformat()
            except ValueError:
                raise CoercionError(f"{_show(value)} is not a valid date") from None
        if _TIMESTAMP_TEXT.match(text):
            try:
                moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            except ValueError:
                raise CoercionError(f"{_show(value)} is not a valid timestamp") from None
            return _date(moment, f, options)
        raise CoercionError(f"{_show(value)} is not a date (YYYY-MM-DD)")
    raise CoercionError(f"a {type(value).__name__} cannot become a date")


# -- choices -------------------------------------------------------------------------------------

def _single_choice(value: object, f: EmarsysField, options: CoercionOptions) -> int | None:
    _reject_non_finite(value)
    if isinstance(value, str):
        if not value.strip():
            return None
        return _choice_of_label(value, f)
    number = _integral(value)
    if number is not None:
        ids = set(f.choices.values())
        by_label = _choice_by_label(str(number), f)
        if number in ids and by_label is not None and by_label != number:
            raise CoercionError(f"{number} is both the id of one choice of {f.label()} and the label of "
                                "another; send the label as text")
        if number in ids:
            return number
        if by_label is not None:
            return by_label
        raise CoercionError(f"{number} is neither a choice id nor a choice label of {f.label()}")
    raise CoercionError(f"a {type(value).__name__} cannot be a choice of {f.label()}")


def _multi_choice(value: object, f: EmarsysField, options: CoercionOptions) -> list[int] | None:
    _reject_non_finite(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise CoercionError(f"{_show(value)} is not a JSON list of choices") from None
            if not isinstance(parsed, list):
                raise CoercionError(f"{_show(value)} is not a JSON list of choices")
            items = parsed
        elif _choice_by_label(text, f) is not None:
            items = [text]      # a label that itself holds a comma
        else:
            items = [part.strip() for part in text.split(",") if part.strip()]
    elif isinstance(value, dict):
        raise CoercionError(f"an object cannot be a list of choices of {f.label()}")
    else:
        items = [value]
    if not items:
        return None         # Emarsys refuses an empty array (2007): an empty selection is a null
    out: list[int] = []
    for item in items:
        if item is None or isinstance(item, (list, tuple, dict, set)):
            raise CoercionError(f"{_show(item)} inside the list is not a choice of {f.label()}")
        choice = _single_choice(_as_text_if_textlike(item), f, options)
        if choice is not None and choice not in out:
            out.append(choice)
    return out or None


def _choice_of_label(label: str, f: EmarsysField) -> int:
    found = _choice_by_label(label, f)
    if found is not None:
        return found
    text = label.strip()
    if text.isdigit() and int(text) in set(f.choices.values()):
        return int(text)
    known = ", ".join(repr(k) for k in list(f.choices)[:10]) + (", ..." if len(f.choices) > 10 else "")
    raise CoercionError(f"{_show(label)} is not a choice of {f.label()}" +
                        (f" (choices: {known})" if known else " (it has no choices)"))


def _choice_by_label(label: str, f: EmarsysField) -> int | None:
    """Exact label first, then trimmed and case-insensitive when that is unambiguous."""
    if label in f.choices:
        return f.choices[label]
    folded = label.strip().casefold()
    candidates = {cid for name, cid in f.choices.items() if name.strip().casefold() == folded}
    if len(candidates) > 1:
        raise CoercionError(f"{_show(label)} matches several choices of {f.label()} when case is ignored")
    return candidates.pop() if candidates else None


def _integral(value: object) -> int | None:
    """An int for int, integral Decimal and integral float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.adjusted() <= 30 and value == value.to_integral_value():
        return int(value)
    return None


# -- opt-in --------------------------------------------------------------------------------------

def _optin(value: object, f: EmarsysField, options: CoercionOptions) -> int | None:
    _reject_non_finite(value)
    if isinstance(value, bool):
        return 1 if value else 2
    if isinstance(value, str):
        text = value.strip().casefold()
        if not text:
            return None
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 2
        raise CoercionError(f"{_show(value)} is neither clearly true nor clearly false for opt-in")
    number = _integral(value)
    if number in (0, 1, 2):
        return 1 if number == 1 else 2
    if isinstance(value, (int, float, Decimal)):
        raise CoercionError(f"{_show(value)} is not an opt-in value (1 or true = in; 0, 2 or false = out)")
    raise CoercionError(f"a {type(value).__name__} cannot be an opt-in value")


def _not_writable(value: object, f: EmarsysField, options: CoercionOptions) -> object:
    raise CoercionError(f"the field {f.label()} cannot be written through the API")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_COERCERS = {
    **{kind: _text for kind in TEXT_TYPES},
    **{kind: _date for kind in DATE_TYPES},
    "numeric": _numeric,
    "singlechoice": _single_choice,
    "multichoice": _multi_choice,
    "optin": _optin,
}


def coercer_for(f: EmarsysField, options: CoercionOptions = CoercionOptions()):
    """`coerce` for one field, as a function of the value alone, with a fast path for the types a
    warehouse column of that kind usually holds. Every other value takes `coerce` itself, so results
    are the same either way (a property test holds them equal); this only saves a sync's hot loop
    the generic dispatch, about 5 µs a value."""
    kind = f.kind

    def slow(value: object) -> object:
        return coerce(value, f, options)

    if kind in TEXT_TYPES:
        limit = TEXT_LIMITS.get(f.application_type)

        def text(value: object) -> object:
            if type(value) is str and (limit is None or len(value) <= limit):
                return value
            return slow(value)
        return text

    if kind in DATE_TYPES:
        try:
            zone = options.zone()
        except CoercionError:
            return slow

        in_utc = zone is timezone.utc

        def as_date(value: object) -> object:
            kind_of = type(value)
            if kind_of is date:
                return value.isoformat()  # type: ignore[attr-defined]
            if kind_of is datetime:
                if value.tzinfo is not None:  # type: ignore[attr-defined]
                    return value.astimezone(zone).date().isoformat()  # type: ignore[attr-defined]
                if in_utc:   # naive timestamps are UTC wall time (a plan's tz-aware columns too)
                    return value.date().isoformat()  # type: ignore[attr-defined]
            return slow(value)
        return as_date

    if kind == "numeric":
        bound = 10 ** MAX_NUMERIC_DIGITS

        def numeric(value: object) -> object:
            kind_of = type(value)
            if kind_of is int and -bound < value < bound:  # type: ignore[operator]
                return str(value)
            if kind_of is Decimal and value.is_finite():  # type: ignore[attr-defined]
                text = format(value, "f")
                whole, _, fraction = text.partition(".")
                if len(whole.lstrip("-")) <= MAX_NUMERIC_DIGITS and len(fraction) <= MAX_FRACTION_DIGITS:
                    return "0" if text.lstrip("-") == "0" else text
            return slow(value)
        return numeric

    if kind == "singlechoice":
        def single_choice(value: object) -> object:
            if type(value) is str:
                found = f.choices.get(value)  # type: ignore[arg-type]
                if found is not None:
                    return found
            return slow(value)
        return single_choice

    if kind == "optin":
        def optin(value: object) -> object:
            if value is True:
                return 1
            if value is False:
                return 2
            return slow(value)
        return optin

    return slow


# -- whole columns ---------------------------------------------------------------------------------

ColumnCoercer = Callable[[Sequence], "tuple[Sequence, dict[int, CoercionError]]"]
_NONE_TYPE = type(None)
_PLAIN_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_tzinfo_of = attrgetter("tzinfo")
_OPTIN_WIRE = {True: 1, False: 2}


def column_coercer_for(f: EmarsysField, options: CoercionOptions = CoercionOptions()) -> ColumnCoercer:
    """`coercer_for` over a column of values at once: values -> (wire values, {index: CoercionError}),
    with None where a value is None or rejected. A plain column (values of the one Python type a
    warehouse column of that kind holds, none of them a problem) is converted by built-ins mapped over
    the whole column, a fraction of a call per value; any other column goes value by value through
    `coercer_for`, so the results are the same either way (a property test holds them equal)."""
    one = coercer_for(f, options)
    plain = _plain_column_path(f, options)

    def by_value(values: Sequence) -> tuple[list, dict[int, CoercionError]]:
        out: list = []
        errors: dict[int, CoercionError] = {}
        for i, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            try:
                out.append(one(value))
            except CoercionError as exc:
                out.append(None)
                errors[i] = exc
        return out, errors

    if plain is None:
        return by_value

    def convert(values: Sequence) -> tuple[Sequence, dict[int, CoercionError]]:
        kinds = set(map(type, values))
        if _NONE_TYPE not in kinds:
            out = plain(values, kinds)
            return (out, {}) if out is not None else by_value(values)
        kinds.discard(_NONE_TYPE)
        present = [v for v in values if v is not None]
        converted = plain(present, kinds)
        if converted is None:
            return by_value(values)
        it = iter(converted)
        return [None if v is None else next(it) for v in values], {}

    return convert


def _plain_column_path(f: EmarsysField, options: CoercionOptions,
                       ) -> Callable[[Sequence, set], Sequence | None] | None:
    """For a field kind: (non-null values, their Python types) -> wire values when the column is the
    plain case, None otherwise (then the caller goes value by value). Each branch gives what
    `coercer_for`'s fast path gives for those values."""
    kind = f.kind
    if kind in TEXT_TYPES:
        limit = TEXT_LIMITS.get(f.application_type)

        def texts(values: Sequence, kinds: set) -> Sequence | None:
            if kinds <= {str} and (limit is None or max(map(len, values), default=0) <= limit):
                return values
            return None
        return texts

    if kind in DATE_TYPES:
        try:
            in_utc = options.zone() is timezone.utc
        except CoercionError:
            return None

        def dates(values: Sequence, kinds: set) -> Sequence | None:
            if kinds == {date}:
                return list(map(date.isoformat, values))
            # Naive timestamps are UTC wall time: their date is the date in UTC.
            if kinds == {datetime} and in_utc and set(map(_tzinfo_of, values)) == {None}:
                return list(map(date.isoformat, map(datetime.date, values)))
            return None
        return dates

    if kind == "numeric":
        bound = 10 ** MAX_NUMERIC_DIGITS

        def numbers(values: Sequence, kinds: set) -> Sequence | None:
            if not values:
                return values
            if kinds == {int}:
                return list(map(str, values)) if -bound < min(values) and max(values) < bound else None
            if kinds == {str}:
                # Numbers as plain text (as DuckDB and PostgreSQL cast decimals, see Dialect): what
                # Decimal(text) formats back to, unchanged.
                if max(map(len, values)) <= MAX_NUMERIC_DIGITS and "-0" not in values and \
                        None not in map(_PLAIN_NUMBER.fullmatch, values):
                    return values
                return None
            if kinds == {Decimal} and all(map(Decimal.is_finite, values)):
                text = list(map(format, values, repeat("f")))
                # No text longer than the digits allowed before the point: then neither part is over.
                if max(map(len, text)) > MAX_NUMERIC_DIGITS:
                    return None
                return ["0" if t == "-0" else t for t in text] if "-0" in text else text
            return None
        return numbers

    if kind == "singlechoice":
        def choices(values: Sequence, kinds: set) -> Sequence | None:
            if kinds <= {str}:
                out = list(map(f.choices.get, values))   # type: ignore[arg-type]
                return out if None not in out else None
            return None
        return choices

    if kind == "optin":
        def optins(values: Sequence, kinds: set) -> Sequence | None:
            return list(map(_OPTIN_WIRE.__getitem__, values)) if kinds == {bool} else None
        return optins

    return None
