"""A thin SQL layer over the project's dbt adapter, shared by the source reader and the state store.

Every statement runs in an explicit transaction (`BEGIN` ... `COMMIT`, rolled back on error): dbt's
Postgres connections are not in autocommit mode, so a bare read would leave the session "idle in
transaction" and hold locks, and a write would never be committed. Statements run on the calling
thread's dbt connection: each thread enters `project.connection(...)` first.

The SQL is the same on every warehouse; where adapters differ, `Dialect` says how (a very small
layer: index creation, statistics, table locks), and type names and expressions come from dbt's own
cross-database macros (`type_string`, `hash`, `concat`, `cast`, `length`) rendered by the adapter.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterator, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dialect:
    name: str
    # Postgres plans lookups by key with an index and needs one for a fast delete-by-key; DuckDB's
    # hash joins and zone maps don't, and an ART index would only cost memory and insert time.
    indexes: bool
    # Statistics for the planner after a bulk load (Postgres `analyze`).
    analyze: bool
    # Serialise concurrent migrations across processes (DuckDB allows one writing process anyway).
    lock_table_sql: str | None
    # dbt-postgres "begins" by doing nothing and commits with a COMMIT statement, which psycopg2
    # doesn't see: after the first commit it sends no BEGIN of its own, and every statement would
    # commit alone. A BEGIN of our own makes a transaction a transaction again.
    explicit_begin: bool = False
    # A decimal cast to text is its plain digits with every digit of its scale ("12.50", "-3.00"),
    # exactly what the numeric coercion writes for it. Plans then hand numeric fields their decimals
    # as text, which drivers return several times faster than Decimal objects.
    plain_decimal_text: bool = False

    @classmethod
    def for_adapter(cls, adapter_type: str) -> "Dialect":
        if adapter_type == "postgres" or adapter_type == "redshift":
            return cls(adapter_type, indexes=True, analyze=True,
                       lock_table_sql="lock table {table} in exclusive mode", explicit_begin=True,
                       plain_decimal_text=adapter_type == "postgres")
        if adapter_type == "duckdb":
            return cls(adapter_type, indexes=False, analyze=False, lock_table_sql=None, plain_decimal_text=True)
        # Other warehouses (Snowflake, BigQuery, Databricks): no secondary indexes to create.
        return cls(adapter_type, indexes=False, analyze=False, lock_table_sql=None)


def literal(value: Any) -> str:
    """A SQL literal for a value the runner produced (names, keys, messages, numbers, timestamps)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return f"cast('{value.strftime('%Y-%m-%d %H:%M:%S.%f')}' as timestamp)"
    text = str(value).replace("\x00", "")   # Postgres text can't hold NUL
    return "'" + text.replace("'", "''") + "'"


def values_rows(rows: Sequence[Sequence[Any]]) -> str:
    return ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)


class Warehouse:
    """SQL on the calling thread's dbt connection, one transaction per call."""

    def __init__(self, adapter: Any):
        self.adapter = adapter
        self.dialect = Dialect.for_adapter(adapter.type())
        self._macros: dict[tuple, str] = {}

    # -- naming -------------------------------------------------------------------------------

    @property
    def database(self) -> str | None:
        return getattr(self.adapter.config.credentials, "database", None)

    @property
    def target_schema(self) -> str:
        return self.adapter.config.credentials.schema

    def relation(self, schema: str, identifier: str) -> str:
        return str(self.adapter.Relation.create(database=self.database, schema=schema, identifier=identifier))

    def create_schema(self, schema: str) -> None:
        """dbt's own `create_schema` macro: each adapter knows its syntax (Postgres takes no database
        part, DuckDB and Snowflake do, BigQuery makes a dataset)."""
        relation = self.adapter.Relation.create(database=self.database, schema=schema)
        self.adapter.execute_macro("create_schema", kwargs={"relation": relation})
        if self.adapter.connections.get_thread_connection().transaction_open:
            self.adapter.connections.commit()

    def quote(self, identifier: str) -> str:
        return self.adapter.quote(identifier)

    # -- dbt's cross-database macros --------------------------------------------------------

    def macro(self, name: str, **kwargs: Any) -> str:
        """dbt's macro `name` rendered for this adapter, e.g. macro("hash", field="x") -> md5(...)."""
        cache_key = (name, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if cache_key not in self._macros:
            self._macros[cache_key] = " ".join(str(self.adapter.execute_macro(name, kwargs=kwargs)).split())
        return self._macros[cache_key]

    @property
    def text_type(self) -> str:
        return self.macro("type_string")

    @property
    def bigint_type(self) -> str:
        return self.macro("type_bigint")

    @property
    def timestamp_type(self) -> str:
        return self.macro("type_timestamp")

    # -- statements ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator["Warehouse"]:
        connections = self.adapter.connections
        if connections.get_thread_connection().transaction_open:
            # dbt's own macros (get_relation, get_columns_in_relation) leave their reads' transaction
            # open: end it before ours.
            connections.commit()
        connections.begin()
        try:
            if self.dialect.explicit_begin:
                self.run("begin")
            yield self
        except BaseException:
            connections.rollback_if_open()
            raise
        connections.commit()

    def run(self, sql: str) -> Any:
        """Run one statement inside the caller's transaction; return the cursor."""
        _, cursor = self.adapter.connections.add_query(sql, auto_begin=False)
        return cursor

    def execute(self, *statements: str) -> None:
        """Run statements in one transaction."""
        with self.transaction():
            for sql in statements:
                self.run(sql)

    def fetch(self, sql: str) -> list[tuple]:
        with self.transaction():
            return list(self.run(sql).fetchall())

    def fetch_one(self, sql: str) -> tuple | None:
        rows = self.fetch(sql)
        return rows[0] if rows else None

    def scalar(self, sql: str) -> Any:
        row = self.fetch_one(sql)
        return row[0] if row else None

    def insert_values(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                      chunk: int = 500) -> None:
        """Multi-row VALUES inserts, in the caller's transaction (never executemany: ~10x slower)."""
        cols = ", ".join(columns)
        for i in range(0, len(rows), chunk):
            self.run(f"insert into {table} ({cols}) values {values_rows(rows[i:i + chunk])}")

    def table_exists(self, schema: str, identifier: str) -> bool:
        """Asked of the warehouse itself: dbt's relation cache doesn't see tables created after it was
        filled."""
        where = (f"lower(table_schema) = lower({literal(schema)}) "
                 f"and lower(table_name) = lower({literal(identifier)})")
        if self.database and self.dialect.name in ("postgres", "duckdb"):
            where += f" and lower(table_catalog) = lower({literal(self.database)})"
        return bool(self.scalar(f"select count(*) from information_schema.tables where {where}"))

    def schema_exists(self, schema: str) -> bool:
        db = literal(self.database) if self.database else None
        where = f"lower(schema_name) = lower({literal(schema)})"
        if db and self.dialect.name in ("postgres", "duckdb"):
            where += f" and lower(catalog_name) = lower({db})"
        return bool(self.scalar(f"select count(*) from information_schema.schemata where {where}"))


def is_database_file_locked(exc: BaseException) -> bool:
    """DuckDB allows one writing process per file: another process holds it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if "Could not set lock on file" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def wait_pause(waited: float) -> float:
    """Poll interval while waiting for a lock: quick at first, then every 2 seconds."""
    return 0.25 if waited < 2 else 1.0 if waited < 10 else 2.0


def monotonic() -> float:
    return time.monotonic()
