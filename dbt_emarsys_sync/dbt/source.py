"""The engine's view of the warehouse, implemented with the project's dbt adapter."""

from __future__ import annotations

from typing import Iterator

from ..spec import Sync
from .project import DbtProject
from .reader import relation_columns, stream_rows


class DbtWarehouseSource:
    def __init__(self, project: DbtProject, read_batch: int = 10_000):
        self.project = project
        self.read_batch = read_batch

    def columns(self, sync: Sync) -> list[str]:
        model = sync.model
        if model.materialized == "ephemeral" or not model.relation_name:
            from ..errors import ConfigError

            raise ConfigError(f"model {model.name} is ephemeral: there is no relation to read; "
                              "materialize it as a table or view to sync it")
        with self.project.connection(f"emarsys-{sync.name}") as adapter:
            return [c.name for c in relation_columns(adapter, model.relation_name, model.name)]

    def rows(self, sync: Sync, columns: list[str]) -> Iterator[list[tuple]]:
        with self.project.connection(f"emarsys-{sync.name}") as adapter:
            select = ", ".join(adapter.quote(c) for c in columns)
            sql = f"select {select} from {sync.model.relation_name}"
            for _, rows in stream_rows(adapter, sql, self.read_batch):
                yield rows
