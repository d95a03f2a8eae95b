"""The delivery ledger: which dbt Cloud runs the service has taken on, in the warehouse's state schema.

One row per dbt Cloud run id, in `<state schema>.dbt_cloud_deliveries` (the schema of the runner's
state, `<target schema>_emarsys_sync` unless EMARSYS_SYNC_STATE_SCHEMA says otherwise), so a delivery
that dbt Cloud repeats, or one that reaches a restarted service, is not synced twice, and users can see
with SQL what the service did:

    run_id, job_id, environment_id, event_id, status, attempts, message,
    received_at, started_at, finished_at

`status` goes queued -> running -> success | rejected_rows | failed | not_synced | error | abandoned.
Only the worker thread calls the ledger (see worker.py), and the service runs as one replica, so
"look up, then insert" races no one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from ..dbt.project import DbtArgs, DbtProject
from ..dbt.state import StateStore, now_utc
from ..dbt.warehouse import Warehouse, literal
from .worker import QUEUED, RUNNING, Delivery, Outcome

TABLE = "dbt_cloud_deliveries"
MAX_MESSAGE = 2000
COLUMNS = ("run_id", "job_id", "environment_id", "event_id", "status", "attempts", "message",
           "received_at", "started_at", "finished_at")


class WarehouseDeliveryLedger:
    """The ledger through the project's dbt adapter: the same profile and target as the syncs."""

    def __init__(self, args: DbtArgs, schema: str | None = None):
        self.args = args
        self.schema_name = schema
        self.table = ""

    # -- DeliveryLedger -----------------------------------------------------------------------

    def open(self) -> None:
        with self._warehouse() as wh:
            schema = StateStore(wh, self.schema_name).schema
            self.table = wh.relation(schema, TABLE)
            if not wh.schema_exists(schema):
                wh.execute(f"create schema if not exists {_schema_name(wh, schema)}")
            # Type names from the adapter's Column class: dbt's type macros would need a parsed
            # project, which the service doesn't have before its first run's manifest arrives.
            column = wh.adapter.Column
            text, ts = column.translate_type("string"), column.translate_type("timestamp")
            wh.execute(
                f"create table if not exists {self.table} (run_id bigint not null, job_id bigint, "
                f"environment_id bigint, event_id {text}, status {text} not null, attempts integer not null, "
                f"message {text}, received_at {ts}, started_at {ts}, finished_at {ts})")

    def unfinished(self) -> list[Delivery]:
        with self._warehouse() as wh:
            rows = wh.fetch(f"select run_id, job_id, environment_id, event_id, attempts from {self.table} "
                            f"where status in ({literal(QUEUED)}, {literal(RUNNING)}) "
                            "order by received_at, run_id")
        return [Delivery(run_id=int(r[0]), job_id=_opt_int(r[1]), environment_id=_opt_int(r[2]),
                         event_id=r[3] or "", attempts=int(r[4] or 0), resumed=True) for r in rows]

    def claim(self, delivery: Delivery) -> bool:
        run_id = int(delivery.run_id)
        with self._warehouse() as wh:
            if wh.fetch(f"select 1 from {self.table} where run_id = {run_id}"):
                return False
            values = (run_id, delivery.job_id, delivery.environment_id, delivery.event_id or None, QUEUED, 0,
                      None, now_utc(), None, None)
            wh.execute(f"insert into {self.table} ({', '.join(COLUMNS)}) values "
                       f"({', '.join(literal(v) for v in values)})")
        return True

    def started(self, run_id: int) -> int:
        run_id = int(run_id)
        with self._warehouse() as wh:
            wh.execute(f"update {self.table} set status = {literal(RUNNING)}, attempts = attempts + 1, "
                       f"started_at = {literal(now_utc())}, finished_at = null where run_id = {run_id}")
            attempts = wh.scalar(f"select attempts from {self.table} where run_id = {run_id}")
        return int(attempts or 1)

    def finished(self, run_id: int, outcome: Outcome) -> None:
        with self._warehouse() as wh:
            wh.execute(f"update {self.table} set status = {literal(outcome.status)}, "
                       f"message = {literal(outcome.message[:MAX_MESSAGE])}, "
                       f"finished_at = {literal(now_utc())} where run_id = {int(run_id)}")

    def close(self) -> None:
        """Connections are opened for each call and released after it: nothing is held."""

    def rows(self) -> list[dict]:
        """Every delivery, oldest run first (tests and inspection)."""
        with self._warehouse() as wh:
            rows = wh.fetch(f"select {', '.join(COLUMNS)} from {self.table} order by run_id")
        return [dict(zip(COLUMNS, row)) for row in rows]

    @contextmanager
    def _warehouse(self) -> Iterator[Warehouse]:
        """The project's adapter, looked up afresh for each call: a dbt command that a sync runs in
        between (selection, parse) resets dbt's adapters, and a kept reference would be a closed one."""
        with DbtProject(self.args).connection("emarsys-dbt-cloud-ledger") as adapter:
            yield Warehouse(adapter)


def _schema_name(wh: Warehouse, schema: str) -> str:
    """The schema as `create schema` takes it. Written out rather than dbt's `create_schema` macro: the
    service opens the ledger before it has any manifest, so it has no macros yet."""
    if wh.dialect.name in ("postgres", "redshift") or not wh.database:
        return wh.quote(schema)   # the connection names the database; Postgres refuses a database part
    return f"{wh.quote(wh.database)}.{wh.quote(schema)}"


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
