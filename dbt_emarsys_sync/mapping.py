"""Row -> Emarsys contact payload, for one sync. Pure: no dbt, no HTTP.

A row that can't be mapped (no key, an invalid email key, a value that can't be coerced) becomes a
`Rejection` naming the column, the value's type and the field: data, not an exception.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .emarsys.fields import DATE_TYPES, ColumnCoercer, CoercionError, CoercionOptions, EmarsysField, FieldCatalog, \
    coerce, coercer_for, column_coercer_for
from .spec import SyncSpec

EMAIL_FIELD_ID = 3
# Deliberately loose: one @, something before it, a dot in the domain, no spaces. Emarsys decides
# the rest; this only stops keys that can never be an address.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTACT_ID = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True)
class Rejection:
    key: str | None
    reason: str
    code: str = "mapping"       # "invalid_key", "mapping", "duplicate_key", or an Emarsys replyCode

    def as_dict(self) -> dict:
        return {"key": self.key, "code": self.code, "reason": self.reason}


@dataclass(frozen=True)
class MappedField:
    column: str
    index: int
    field: EmarsysField


class MappingError(ValueError):
    """The sync's declaration doesn't fit the model or the account: stop before sending anything.
    `problems`: each as "<key path in the sync>: <message>"."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems

    def located(self) -> list[tuple[str, str]]:
        """(key path in the sync, message) of each problem."""
        return [tuple(p.split(": ", 1)) if ": " in p else ("", p) for p in self.problems]  # type: ignore[misc]


class RowMapper:
    """Maps rows of `read_columns` (the key column, then the mapped columns, as the model names them)."""

    def __init__(self, spec: SyncSpec, catalog: FieldCatalog, model_columns: list[str],
                 utc_columns: frozenset[str] = frozenset()):
        """`utc_columns`: columns whose rows hold a tz-aware timestamp as naive UTC wall time (a plan's
        rows do, see SyncShape.utc_columns)."""
        self.spec = spec
        self.options = CoercionOptions(timezone=spec.timezone, truncate_text=spec.truncate_text)
        problems: list[str] = []
        try:
            self.read_columns = read_columns(spec, model_columns)
        except MappingError as exc:
            problems.extend(exc.problems)
            self.read_columns = []
        by_name = {name.lower(): name for name in self.read_columns}

        def column_index(column: str, where: str) -> int:
            actual = by_name.get(column.lower())
            return -1 if actual is None else self.read_columns.index(actual)

        self.key_index = column_index(spec.key.column, "key.column")
        key_ref = str(spec.key.field)
        if key_ref in ("id", "uid"):
            self.key_field: EmarsysField | None = None
            self.key_id: str = key_ref
        else:
            self.key_field = _resolve(catalog, spec.key.field, "key.field", problems)
            self.key_id = str(self.key_field.id) if self.key_field else ""
        self.normalize_email = spec.normalize_email and self.key_field is not None and \
            self.key_field.id == EMAIL_FIELD_ID

        self.fields: list[MappedField] = []
        for column, ref in spec.fields.items():
            f = _resolve(catalog, ref, f"fields.{column}", problems)
            idx = column_index(column, f"fields.{column}")
            if f is None or idx < 0:
                continue
            if not f.writable:
                problems.append(f"fields.{column}: the Emarsys field {f.label()} is read-only")
                continue
            if self.key_field is not None and f.id == self.key_field.id:
                continue  # the key is always sent; mapping it again changes nothing
            self.fields.append(MappedField(column, idx, f))

        constant_fields = {ref: _resolve(catalog, ref, f"constants.{ref}", problems)
                           for ref in spec.constants}
        catalog.ensure_choices([m.field for m in self.fields] +
                               [f for f in constant_fields.values() if f is not None])
        self.constants: dict[str, Any] = {}
        for ref, value in spec.constants.items():
            f = constant_fields[ref]
            if f is None:
                continue
            try:
                self.constants[str(f.id)] = coerce(value, f, self.options)
            except CoercionError as exc:
                problems.append(f"constants.{ref}: {exc}")
        if problems:
            raise MappingError(problems)
        # The hot loop's view of the mapping: (column index, field id as sent, its coercer, field).
        self._convert = []
        # The same for whole columns (`payloads`): (column index, field id, column coercer, make the
        # values tz-aware first, field).
        self._columns: list[tuple[int, str, ColumnCoercer, bool, MappedField]] = []
        for m in self.fields:
            convert = coercer_for(m.field, self.options)
            # A date field reads a naive timestamp as UTC already; text and other fields need the zone.
            to_utc = self.read_columns[m.index] in utc_columns and m.field.kind not in DATE_TYPES
            if to_utc:
                convert = _utc_aware(convert)
            self._convert.append((m.index, str(m.field.id), convert, m))
            self._columns.append((m.index, str(m.field.id), column_coercer_for(m.field, self.options), to_utc, m))

    def at_offset(self, offset: int) -> "RowMapper":
        """This mapper for rows that carry `offset` other values before the read columns (a plan's
        raw rows), so the hot loop maps them without slicing each row."""
        view = copy.copy(self)
        view.key_index = self.key_index + offset
        view._convert = [(index + offset, field_id, convert, m)
                         for index, field_id, convert, m in self._convert]
        view._columns = [(index + offset, *rest) for index, *rest in self._columns]  # type: ignore[misc]
        return view

    def column_kinds(self) -> dict[int, set[str]]:
        """For each read column a field maps: the kinds of the fields it feeds."""
        kinds: dict[int, set[str]] = {}
        for m in self.fields:
            kinds.setdefault(m.index, set()).add(m.field.kind)
        return kinds

    @property
    def field_ids(self) -> list[int]:
        return [m.field.id for m in self.fields]

    def check_key(self, key: str) -> Rejection | None:
        """Check a key the warehouse already normalised (trimmed; lower-cased email): None when valid."""
        if self.key_field is None:
            # ASCII digits without a leading zero: str.isdigit() takes '²' and full-width digits, and
            # '0100' and '100' would be one contact under two keys (two rows of it sent in one request).
            if self.key_id == "id" and not _CONTACT_ID.fullmatch(key):
                return Rejection(key, f"{key!r} is not an Emarsys contact id (digits 0-9, no leading zero)",
                                 "invalid_key")
            return None
        if self.key_field.id == EMAIL_FIELD_ID:
            return None if _EMAIL.match(key) else \
                Rejection(key, f"{key!r} is not a valid email address", "invalid_key")
        try:
            coerce(key, self.key_field, self.options)
        except CoercionError as exc:
            return Rejection(key, f"key column {self.spec.key.column!r}: {exc}", "invalid_key")
        return None

    def key_of(self, row: tuple) -> str | Rejection:
        raw = row[self.key_index]
        if raw is None:
            return Rejection(None, f"the key column {self.spec.key.column!r} is null", "invalid_key")
        key = str(raw).strip() if isinstance(raw, str) else str(raw)
        if not key:
            return Rejection(None, f"the key column {self.spec.key.column!r} is empty", "invalid_key")
        if self.normalize_email:
            key = key.lower()
        if self.key_field is not None and self.key_field.id == EMAIL_FIELD_ID and not _EMAIL.match(key):
            return Rejection(key, f"{key!r} is not a valid email address", "invalid_key")
        if self.key_field is not None:
            try:
                key = str(coerce(key, self.key_field, self.options))
            except CoercionError as exc:
                return Rejection(key, f"key column {self.spec.key.column!r}: {exc}", "invalid_key")
        return key

    def payload(self, key: str, row: tuple) -> dict[str, Any] | Rejection:
        out: dict[str, Any] = {self.key_id: key}
        skip_nulls = self.spec.null_policy == "skip"
        for index, field_id, convert, m in self._convert:
            value = row[index]
            if value is None:
                wire = None
            else:
                try:
                    wire = convert(value)
                except CoercionError as exc:
                    return Rejection(key, f"column {m.column!r} ({type(value).__name__}) -> field "
                                     f"{m.field.label()}: {exc}")
            if wire is None and skip_nulls:
                continue
            out[field_id] = wire
        if self.constants:
            out.update(self.constants)
        return out

    def payloads(self, rows: Sequence[tuple], keys: Sequence[str | None]
                 ) -> tuple[list[dict[str, Any] | None], dict[int, Rejection]]:
        """`payload` for many rows at once (a page of a plan), a column at a time: the payloads in row
        order, None for a rejected row, and the rejections by row index. `keys` are the rows' keys as
        the warehouse normalised them, checked as `check_key` does; a row that can't be mapped gets
        the reason `payload` gives (the first field that fails, in mapping order)."""
        problems = self._check_keys(keys)
        columns = list(zip(*rows))
        ids = [self.key_id]
        wires: list[Sequence] = [keys]
        for index, field_id, convert, to_utc, m in self._columns:
            values = columns[index] if columns else ()
            wire, errors = convert(list(map(as_utc, values)) if to_utc else values)
            for i, exc in errors.items():
                if i not in problems:
                    problems[i] = Rejection(keys[i], f"column {m.column!r} ({type(rows[i][index]).__name__}) "
                                                     f"-> field {m.field.label()}: {exc}")
            ids.append(field_id)
            wires.append(wire)
        skip_nulls = self.spec.null_policy == "skip" and any(None in wire for wire in wires[1:])
        constants = self.constants
        if not skip_nulls and not constants:
            out: list[dict[str, Any] | None] = [dict(zip(ids, values)) for values in zip(*wires)]
        else:
            out = []
            for values in zip(*wires):
                if skip_nulls and None in values:
                    payload = {k: v for k, v in zip(ids, values) if v is not None}
                else:
                    payload = dict(zip(ids, values))
                if constants:
                    payload.update(constants)
                out.append(payload)
        for i in problems:
            out[i] = None
        return out, problems

    def _check_keys(self, keys: Sequence[str | None]) -> dict[int, Rejection]:
        if self.key_field is not None and self.key_field.id == EMAIL_FIELD_ID and None not in keys \
                and None not in list(map(_EMAIL.match, keys)):   # type: ignore[arg-type]
            return {}
        problems: dict[int, Rejection] = {}
        for i, key in enumerate(keys):
            problem = Rejection(None, "the key is null", "invalid_key") if key is None else self.check_key(key)
            if problem is not None:
                problems[i] = problem
        return problems


def as_utc(value: Any) -> Any:
    """A plan's value of a tz-aware column (UTC wall time, see SyncShape.utc_columns) as the tz-aware
    timestamp it was; any other value as it is."""
    if type(value) is datetime and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _utc_aware(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: convert(as_utc(value))


def read_columns(spec: SyncSpec, model_columns: list[str]) -> list[str]:
    """The model columns a sync reads, as the model spells them: the key column, then each mapped
    column once. Matching is case-insensitive (warehouses differ in how they fold names)."""
    by_name = {name.lower(): name for name in model_columns}
    columns: list[str] = []
    problems: list[str] = []
    for column, where in [(spec.key.column, "key.column")] + [(c, f"fields.{c}") for c in spec.fields]:
        actual = by_name.get(column.lower())
        if actual is None:
            problems.append(f"{where}: column {column!r} is not in the model "
                            f"(columns: {', '.join(model_columns)})")
        elif actual not in columns:
            columns.append(actual)
    if problems:
        raise MappingError(problems)
    return columns


def hash_columns(spec: SyncSpec, model_columns: list[str]) -> list[str]:
    """The mapped columns whose values decide whether a row changed, in a stable order. The key column
    is the row's identity, not a value, unless it is also mapped to a field."""
    by_name = {name.lower(): name for name in model_columns}
    return sorted({by_name[c.lower()] for c in spec.fields if c.lower() in by_name}, key=str.lower)


def _resolve(catalog: FieldCatalog, ref: Any, where: str, problems: list[str]) -> EmarsysField | None:
    try:
        return catalog.resolve(ref)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return None
