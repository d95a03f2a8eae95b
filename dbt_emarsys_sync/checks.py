"""Checks of a sync against its model and the Emarsys account, before anything is sent.

- the model can be read: not ephemeral, built (its relation exists);
- the key column and every mapped column exist in the built relation (or, for a model that isn't
  built, in its enforced contract);
- every mapped Emarsys field exists, is writable, and accepts the column's type: a boolean column into
  a date field can never work, so it is an error before the run, not 10,000 rejected rows during it.
  Values whose fitness depends on the row (text into a date field, a label into a choice field) are
  left to the per-row mapping, which rejects the rows that don't fit.

`type_problems` is pure (column types + field catalogue); `check_syncs` reads columns through the
project's adapter and resolves fields through `RowMapper`, exactly as a run does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .emarsys.fields import CHOICE_TYPES, DATE_TYPES, TEXT_TYPES, EmarsysField, FieldCatalog
from .errors import ConfigError
from .spec import Problem, Sync, SyncSpec

# -- column types -------------------------------------------------------------------------------------

# Type families of warehouse types, first match wins (lower-cased type names of DuckDB, Postgres,
# Snowflake, BigQuery, Databricks, Redshift).
_FAMILIES: list[tuple[str, re.Pattern]] = [
    ("array", re.compile(r"(\[\]$|^array\b|^_|^list\b|^list<|^array<)")),
    ("struct", re.compile(r"^(struct|map|row|record|object|union|variant|super)\b")),
    ("json", re.compile(r"^jsonb?\b")),
    ("boolean", re.compile(r"^(bool|boolean)$")),
    ("timestamp", re.compile(r"^(timestamp|datetime|timestamptz|timestamp_[a-z]+)\b")),
    ("date", re.compile(r"^date$")),
    ("time", re.compile(r"^(time|timetz)\b")),
    ("interval", re.compile(r"^interval\b")),
    ("uuid", re.compile(r"^uuid$")),
    ("binary", re.compile(r"^(blob|bytea|binary|varbinary|bytes|bit|bitstring)\b")),
    ("integer", re.compile(r"^(u?(tiny|small|big|huge)?int(eger)?\d*|u?hugeint|int[248]|serial\d*|"
                           r"bigserial|smallserial|byteint|long|short|uinteger|ubigint|usmallint|utinyint)$")),
    ("integer", re.compile(r"^(number|numeric|decimal)\s*\(\s*\d+\s*(,\s*0\s*)?\)$")),
    ("decimal", re.compile(r"^(number|numeric|decimal|dec|money|bignumeric|bigdecimal)\b")),
    ("float", re.compile(r"^(float\d*|double( precision)?|real|float64)\b")),
    ("text", re.compile(r"^(varchar|char|character|text|string|nvarchar|nchar|bpchar|name|citext|clob|"
                        r"character varying|enum|ntext|varchar2)\b")),
]

_FAMILY_TEXT = {"text": "text", "integer": "an integer", "decimal": "a decimal number", "float": "a float",
                "boolean": "a boolean", "date": "a date", "timestamp": "a timestamp", "time": "a time of day",
                "interval": "an interval", "uuid": "a UUID", "binary": "binary data", "array": "a list",
                "struct": "a structure", "json": "JSON"}

# Which column families each kind of Emarsys field accepts (values are still checked row by row).
_ACCEPTS: dict[str, set[str]] = {
    "text": {"text", "integer", "decimal", "float", "boolean", "date", "timestamp", "time", "uuid",
             "binary", "array", "struct", "json"},
    "date": {"text", "date", "timestamp"},
    "numeric": {"text", "integer", "decimal", "float"},
    "optin": {"text", "boolean", "integer", "decimal"},
    "singlechoice": {"text", "integer"},
    "multichoice": {"text", "integer", "array", "json"},
}
_TAKES = {"text": "text", "date": "dates (a date or timestamp column, or text as YYYY-MM-DD)",
          "numeric": "numbers", "optin": "opt-in values (a boolean, 1/2 or true/false)",
          "singlechoice": "one choice (a label as text, or a choice id)",
          "multichoice": "choices (a list of labels or ids, or comma-separated text)"}
# The key is sent as text; these families make sensible keys.
_KEY_FAMILIES = {"text", "integer", "decimal", "uuid"}


def column_family(data_type: str | None) -> str | None:
    """The family of a warehouse type name (`VARCHAR`, `timestamp with time zone`, `DECIMAL(12,2)`,
    `INTEGER[]`...), or None when it isn't known (then nothing is checked)."""
    if not data_type:
        return None
    text = " ".join(data_type.strip().lower().split())
    for family, pattern in _FAMILIES:
        if pattern.search(text):
            return family
    return None


def _field_kind(f: EmarsysField) -> str | None:
    kind = f.kind
    if kind in TEXT_TYPES:
        return "text"
    if kind in DATE_TYPES:
        return "date"
    if kind in ("numeric", "optin") or kind in CHOICE_TYPES:
        return kind
    return None


@dataclass(frozen=True)
class ColumnType:
    name: str
    data_type: str | None


def type_problems(spec: SyncSpec, columns: Sequence[Any] | Mapping[str, str | None],
                  catalog: FieldCatalog) -> list[tuple[str, str]]:
    """(key path in the sync, message) for every mapped column whose type the field can't take.

    `columns` have `name` and `data_type`, or are a {name: data_type} mapping. Unknown columns and
    unresolvable fields are not reported here (the mapping reports them); unknown types are not checked."""
    if isinstance(columns, Mapping):
        columns = [ColumnType(name, data_type) for name, data_type in columns.items()]
    by_name = {c.name.lower(): c for c in columns}
    problems: list[tuple[str, str]] = []

    key_column = by_name.get(spec.key.column.lower())
    if key_column is not None:
        family = column_family(key_column.data_type)
        if family is not None and family not in _KEY_FAMILIES:
            problems.append(("key.column", f"column {key_column.name!r} is {key_column.data_type} "
                             f"({_FAMILY_TEXT[family]}); a key must be text or a number"))

    for column_name, ref in spec.fields.items():
        column = by_name.get(column_name.lower())
        try:
            target = catalog.resolve(ref)
        except ValueError:
            continue
        if column is None:
            continue
        family = column_family(column.data_type)
        kind = _field_kind(target)
        if family is None or kind is None or family in _ACCEPTS[kind]:
            continue
        problems.append((f"fields.{column_name}",
                         f"column {column.name!r} is {column.data_type} ({_FAMILY_TEXT[family]}) but the "
                         f"Emarsys field {target.label()} takes {_TAKES[kind]}"))
    return problems


# -- against the warehouse ----------------------------------------------------------------------------


def model_columns(project: Any, sync: Sync) -> list[ColumnType]:
    """The columns of the sync's built relation (adapter), with the contract's types where the
    adapter doesn't know one. Raises ConfigError when the model can't be read."""
    from .dbt.reader import relation_columns

    model = sync.model
    if model.materialized == "ephemeral" or not model.relation_name:
        raise ConfigError(f"model {model.display_name} is ephemeral: there is no relation to read; "
                          "materialize it as a table or view (or declare the sync on a model that selects "
                          "from it)")
    try:
        with project.connection(f"emarsys-check-{sync.name}") as adapter:
            built = relation_columns(adapter, model.relation_name, model.display_name, model=model)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the warehouse's own error, said in one line
        raise project.warehouse_problem(f"cannot read model {model.display_name} from the warehouse", exc) from None
    declared = {name.lower(): data_type for name, data_type in model.declared_columns if data_type}
    return [ColumnType(c.name, c.data_type or declared.get(c.name.lower())) for c in built]


def contract_columns(sync: Sync) -> list[ColumnType] | None:
    """The enforced contract's columns (name, data_type), or None without an enforced contract."""
    if not sync.model.contract_enforced:
        return None
    return [ColumnType(name, data_type) for name, data_type in sync.model.declared_columns]


def check_syncs(project: Any, syncs: Iterable[Sync], catalog: FieldCatalog | None) -> list[Problem]:
    """Every problem of every sync against its model (and, with a catalogue, the account's fields)."""
    from .dbt.reader import NotBuilt
    from .emarsys.errors import EmarsysError
    from .mapping import MappingError, RowMapper

    syncs = list(syncs)
    problems: list[Problem] = []
    for sync in syncs:
        try:
            columns = model_columns(project, sync)
        except NotBuilt as exc:
            problems.append(sync.problem("", _about_the_model(exc, sync)))
            # An enforced contract still says which columns the model will have.
            columns = contract_columns(sync)
            if columns is None:
                continue
        except ConfigError as exc:
            problems.append(sync.problem("", _about_the_model(exc, sync)))
            continue
        names = [c.name for c in columns]
        problems += [sync.problem(path, message) for path, message in missing_columns(sync.spec, names)]
        if catalog is None:
            continue
        try:
            RowMapper(sync.spec, catalog, names)
        except EmarsysError as exc:   # loading a choice field's choices
            problems.append(sync.problem("", f"can't read the Emarsys fields' choices: {exc}"))
        except MappingError as exc:
            # Missing columns are reported above, with a did-you-mean.
            problems += [sync.problem(*_split_mapping_problem(text))
                         for text in _MAPPING_SPLIT.split(str(exc)) if "is not in the model" not in text]
        problems += [sync.problem(path, message)
                     for path, message in type_problems(sync.spec, columns, catalog)]
    return problems + [problem for sync in syncs for problem in _collision_problems(sync, catalog)]


def field_collisions(spec: SyncSpec, catalog: FieldCatalog | None) -> list[tuple[str, str]]:
    """(key path, message) for every mapping that writes an Emarsys field another one already writes:
    one value would silently overwrite the other. Field references are resolved to field ids first
    (`first_name`, `First Name` and `1` are one field); without a catalogue only identical references
    are recognised. A column mapped to the field its own key matches is no collision (same value)."""
    def identity(ref: Any) -> tuple[Any, str] | None:
        if catalog is None:
            text = str(ref).strip()
            return text.casefold(), repr(text)
        try:
            target = catalog.resolve(ref)
        except ValueError:
            return None            # reported as an unknown field elsewhere
        return target.id, target.label()

    # (key path, what writes, the column it reads or None, field reference)
    writers: list[tuple[str, str, str | None, Any]] = []
    if str(spec.key.field) not in ("id", "uid"):
        writers.append(("key.field", f"the key column {spec.key.column!r}", spec.key.column, spec.key.field))
    writers += [(f"fields.{column}", f"column {column!r}", column, ref) for column, ref in spec.fields.items()]
    writers += [(f"constants.{ref}", f"constant {ref}", None, ref) for ref in spec.constants]

    first: dict[Any, tuple[str, str, str | None]] = {}
    problems = []
    for path, what, column, ref in writers:
        found = identity(ref)
        if found is None:
            continue
        ident, label = found
        if ident not in first:
            first[ident] = (path, what, column)
            continue
        other_path, other_what, other_column = first[ident]
        if column is not None and other_column is not None and column.lower() == other_column.lower():
            continue
        problems.append((path, f"{what} and {other_what} ({other_path}) both write the Emarsys field {label}: "
                               "one value would overwrite the other; map the field once"))
    return problems


def _collision_problems(sync: Sync, catalog: FieldCatalog | None) -> list[Problem]:
    return [sync.problem(path, message) for path, message in field_collisions(sync.spec, catalog)]


def _about_the_model(exc: Exception, sync: Sync) -> str:
    """"model x is not built: ..." -> "the model is not built: ..." (the problem names the model already)."""
    text = str(exc)
    prefix = f"model {sync.model.display_name} "
    return "the model " + text[len(prefix):] if text.startswith(prefix) else text


def missing_columns(spec: SyncSpec, columns: Sequence[str]) -> list[tuple[str, str]]:
    """(key path, message) for the key and mapped columns the model doesn't have (no Emarsys needed)."""
    lower = {c.lower() for c in columns}
    listed = ", ".join(columns)
    found = []
    for path, column in [("key.column", spec.key.column), *((f"fields.{c}", c) for c in spec.fields)]:
        if column.lower() not in lower:
            near = _nearest(column, list(columns))
            found.append((path, f"column {column!r} is not in the model{near} (columns: {listed})"))
    return found


# RowMapper joins its problems with "; ", and each starts with the key it concerns.
_MAPPING_SPLIT = re.compile(r"; (?=(?:key\.column|key\.field|fields\.|constants\.))")


def _split_mapping_problem(text: str) -> tuple[str, str]:
    """`fields.x: message` (RowMapper's form) -> ("fields.x", "message")."""
    head, sep, rest = text.partition(": ")
    if sep and re.fullmatch(r"(key\.(column|field)|fields\.[^ ]+|constants\.[^ ]+)", head):
        return head, rest
    return "", text


def _nearest(word: str, candidates: list[str]) -> str:
    import difflib

    by_lower = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[found[0]]!r}?" if found else ""


def column_type_problems(project: Any, sync: Sync, catalog: FieldCatalog) -> list[str]:
    """The runner's check after `Engine.prepare` (which checked columns and fields): mapped columns
    whose type the Emarsys field can't take, as one-line messages naming file, model and sync."""
    columns = model_columns(project, sync)
    return [str(sync.problem(path, message)) for path, message in type_problems(sync.spec, columns, catalog)] + \
        [str(problem) for problem in _collision_problems(sync, catalog)]


def require_columns(project: Any, syncs: Iterable[Sync]) -> None:
    """The run's (and plan's) check before planning, exactly as validate words it: the key and mapped
    columns exist in each sync's model, every problem at once, with file:line and the nearest column.
    Raises SpecError. Runs on a thread of its own: dbt closes a thread's connection when a
    `connection_named` block ends, and the caller's thread may hold the warehouse open."""
    from concurrent.futures import ThreadPoolExecutor

    from .spec import SpecError

    syncs = list(syncs)
    if not syncs:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="emarsys-check") as pool:
        problems = pool.submit(check_syncs, project, syncs, None).result()
    if problems:
        raise SpecError(problems)
