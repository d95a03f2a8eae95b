"""Reading a model's rows through the dbt adapter, streaming.

The DB-API cursor and `fetchmany` work on every adapter and hold one batch at a time; dbt's
`adapter.execute(fetch=True)` would build an agate table of the whole model (dbt-notes.md §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import ConfigError
from ..spec import ModelRef


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str


class NotBuilt(ConfigError):
    """The model's relation is not in the warehouse."""


def relation_columns(adapter: Any, relation_name: str, model_name: str, *,
                     model: ModelRef | None = None) -> list[Column]:
    """The built relation's columns; a clear error when the model was never built.

    With `model`, the relation is looked up by the manifest's database, schema and alias (exact, so
    quoted and mixed-case names work), and the error names the model as `--select` takes it."""
    if model is not None and model.identifier and model.schema:
        database, schema, identifier = model.database, model.schema, model.identifier
        selector = model.selector
    else:
        relation = _relation(adapter, relation_name)
        database, schema, identifier = relation.database, relation.schema, relation.identifier
        selector = model_name
    found = adapter.get_relation(database, schema, identifier)
    if found is None:
        raise NotBuilt(
            f"model {model_name} is not built: {relation_name} does not exist in the warehouse; "
            f"run `dbt build --select {selector}` first")
    return [Column(c.name, c.dtype) for c in adapter.get_columns_in_relation(found)]


def stream_rows(adapter: Any, sql: str, batch_size: int = 10_000) -> Iterator[tuple[list[str], list[tuple]]]:
    """Yield (column names, rows) batches of a query, holding one batch in memory at a time."""
    _, cursor = adapter.connections.add_select_query(sql)
    names = [d[0] for d in cursor.description]
    while True:
        rows = cursor.fetchmany(batch_size)
        if not rows:
            break
        yield names, rows


def _relation(adapter: Any, relation_name: str) -> Any:
    parts = [p.strip().strip('"`[]') for p in _split_identifier(relation_name)]
    while len(parts) < 3:
        parts.insert(0, None)
    return adapter.Relation.create(database=parts[0], schema=parts[1], identifier=parts[2])


def _split_identifier(name: str) -> list[str]:
    """Split `"db"."schema"."table"` on dots outside quotes."""
    parts, current, quote = [], "", None
    for ch in name:
        if quote:
            current += ch
            if ch == quote:
                quote = None
        elif ch in '"`':
            quote = ch
            current += ch
        elif ch == ".":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts
