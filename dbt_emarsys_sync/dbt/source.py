"""The engine's view of the warehouse, implemented with the project's dbt adapter: the models' columns,
per-thread connections, and the state store (dbt/state.py) in the same warehouse."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from ..errors import ConfigError, SyncFailed
from ..spec import Sync
from .project import DbtProject
from .reader import relation_columns, stream_rows
from .state import StateStore
from .warehouse import Warehouse, is_database_file_locked, wait_pause

log = logging.getLogger(__name__)

DUCKDB_MEMORY_ENV = "EMARSYS_SYNC_DUCKDB_MEMORY_LIMIT"
DEFAULT_DUCKDB_MEMORY_LIMIT = "200MB"         # while diffing: a million-row diff's hash tables fit
DEFAULT_DUCKDB_SEND_MEMORY_LIMIT = "100MB"    # while sending: plan pages and checkpoints only


def check_duckdb_memory_limit(value: str) -> None:
    """EMARSYS_SYNC_DUCKDB_MEMORY_LIMIT (other than off): a size DuckDB takes. Also checked by `validate`."""
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", value.strip(), re.IGNORECASE):
        raise ConfigError(f"{DUCKDB_MEMORY_ENV} must be a size such as 512MB or 2GB, got {value.strip()!r}")


class WarehouseBusy(SyncFailed):
    """Another process holds the database (DuckDB: one writing process per file)."""


class DbtWarehouseSource:
    def __init__(self, project: DbtProject, state_schema: str | None = None, read_batch: int = 10_000):
        self.project = project
        self.read_batch = read_batch
        self.state_schema = state_schema
        self._store: StateStore | None = None
        self._local = threading.local()
        self._memory_caps: tuple[str, str] | None = None

    @contextmanager
    def connection(self, name: str) -> Iterator[Any]:
        """The calling thread's dbt connection for the block (each sync thread has its own). Re-entrant:
        dbt keeps one connection per thread and closes it when its outermost block ends, so an inner
        block reuses the one that is open."""
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield self.project.adapter()
            finally:
                self._local.depth -= 1
            return
        with self.project.connection(name) as adapter:
            self._local.depth = 1
            try:
                yield adapter
            finally:
                self._local.depth = 0

    @contextmanager
    def hold(self, timeout: float, name: str = "emarsys-sync") -> Iterator[None]:
        """Open the warehouse for the whole run, waiting up to `timeout` seconds when another process
        holds it (a DuckDB file takes one writing process at a time: another sync run, or `dbt build`).

        Holding one connection open for the run also keeps dbt-duckdb from closing and reopening the
        file between the run's steps, which would let another process in halfway."""
        started = time.monotonic()
        while True:
            stack = ExitStack()
            adapter = stack.enter_context(self.connection(name))
            try:
                Warehouse(adapter).fetch("select 1")
                self._bound_memory(adapter)
            except Exception as exc:
                stack.close()
                if not is_database_file_locked(exc):
                    raise self.project.warehouse_problem("cannot open the warehouse", exc) from None
                waited = time.monotonic() - started
                if waited >= timeout:
                    raise WarehouseBusy(
                        f"the warehouse is in use by another process and stayed so for {waited:.0f}s "
                        f"(--lock-timeout {timeout:g}): {_first_line(exc)}") from None
                log.info("the warehouse is in use by another process; waiting (%s)", _first_line(exc))
                time.sleep(wait_pause(waited))
                continue
            with stack:
                yield
            return

    def _bound_memory(self, adapter: Any) -> None:
        """DuckDB runs in this process and by default may use 80% of the machine's memory for its
        buffers: a million-row plan would take the process's memory far past what it needs. Unless the
        profile sets its own `memory_limit`, cap it (DuckDB spills to disk beyond it)."""
        self._memory_caps = None
        if adapter.type() != "duckdb":
            return
        settings = getattr(adapter.config.credentials, "settings", None) or {}
        if "memory_limit" in settings:
            return
        chosen = os.environ.get(DUCKDB_MEMORY_ENV)
        if chosen is not None:
            chosen = chosen.strip()
            if not chosen or chosen.lower() in ("off", "none"):
                return
            check_duckdb_memory_limit(chosen)
            self._memory_caps = (chosen, chosen)
        else:
            self._memory_caps = (DEFAULT_DUCKDB_MEMORY_LIMIT, DEFAULT_DUCKDB_SEND_MEMORY_LIMIT)
        Warehouse(adapter).execute(f"set memory_limit = '{self._memory_caps[0]}'")

    def sending(self) -> None:
        """The plans are made: sending only reads them a page at a time and writes small checkpoints,
        so DuckDB's buffers can shrink to leave room for the requests in flight."""
        if self._memory_caps and self._memory_caps[1] != self._memory_caps[0]:
            with self.connection("emarsys-sync") as adapter:
                Warehouse(adapter).execute(f"set memory_limit = '{self._memory_caps[1]}'")

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(Warehouse(self.project.adapter()), self.state_schema)
        return self._store

    def columns(self, sync: Sync) -> list[tuple[str, str]]:
        """(name, type) of the model's columns; a ConfigError when the model can't be read."""
        model = sync.model
        problem = ephemeral_problem(model)
        if problem:
            raise ConfigError(problem)
        with self.connection(f"emarsys-{sync.name}") as adapter:
            columns = [(c.name, c.data_type) for c in relation_columns(adapter, model.relation_name, model.name)]
            if not columns:
                # A view whose query no longer binds (a table under it was dropped) lists no columns on
                # some adapters: read it, so the error says why, instead of "column not in the model".
                try:
                    Warehouse(adapter).fetch(f"select * from {model.relation_name} where 1 = 0")
                except Exception as exc:  # noqa: BLE001 - the warehouse's own error, reported as is
                    raise ConfigError(f"model {model.name} can't be read ({model.relation_name}): "
                                      f"{_first_line(exc)}") from None
            return columns

    def rows(self, sync: Sync, columns: list[str]) -> Iterator[list[tuple]]:
        """Every row of the model's `columns` (streaming); the engine itself reads plans instead."""
        with self.connection(f"emarsys-{sync.name}") as adapter:
            select = ", ".join(adapter.quote(c) for c in columns)
            sql = f"select {select} from {sync.model.relation_name}"
            for _, rows in stream_rows(adapter, sql, self.read_batch):
                yield rows


def ephemeral_problem(model) -> str | None:
    """Why an ephemeral model can't sync: dbt inlines it into the models that select from it, so it has
    no relation to read and no build ever makes one."""
    if model.materialized == "ephemeral" or not model.relation_name:
        return (f"model {model.name} is ephemeral: there is no relation to read; materialize it as a table "
                "or view to sync it")
    return None


def _first_line(exc: BaseException) -> str:
    """The warehouse's message on one line, without dbt's "Runtime Error"/"Database Error" heading."""
    text = " ".join(str(exc).split())
    for heading in ("Runtime Error ", "Database Error ", "Compilation Error "):
        if text.startswith(heading):
            text = text[len(heading):]
    return text[:300] or type(exc).__name__
