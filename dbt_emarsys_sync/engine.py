"""One sync, start to end: read -> map -> batch -> send -> account for every key.

The engine sees the warehouse through `WarehouseSource` and Emarsys through `EmarsysClient`; it does
not import dbt.
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Iterator, Protocol

import orjson

from .emarsys import EmarsysClient, FieldCatalog, TransientError
from .emarsys.batching import MAX_BATCH_BYTES, MAX_BATCH_CONTACTS, ContactBatcher
from .emarsys.errors import AuthError, PermissionDenied, RequestRejected
from .errors import ConfigError
from .mapping import MappingError, Rejection, RowMapper
from .report import SyncReport
from .spec import Sync

log = logging.getLogger(__name__)


class WarehouseSource(Protocol):
    def columns(self, sync: Sync) -> list[str]: ...

    def rows(self, sync: Sync, columns: list[str]) -> Iterator[list[tuple]]: ...


@dataclass(frozen=True)
class EngineOptions:
    max_batch_contacts: int = MAX_BATCH_CONTACTS
    max_batch_bytes: int = MAX_BATCH_BYTES
    in_flight: int = 4            # concurrent requests per sync


@dataclass(frozen=True)
class PreparedSync:
    sync: Sync
    mapper: RowMapper


class Engine:
    def __init__(self, client: EmarsysClient, catalog: FieldCatalog, source: WarehouseSource,
                 options: EngineOptions | None = None):
        self.client = client
        self.catalog = catalog
        self.source = source
        self.options = options or EngineOptions()

    def prepare(self, sync: Sync) -> "PreparedSync":
        """Check the sync against its model and the account; raise ConfigError before any write."""
        columns = self.source.columns(sync)
        try:
            mapper = RowMapper(sync.spec, self.catalog, columns)
        except MappingError as exc:
            raise ConfigError(f"{sync.model.yaml_path}: model {sync.model.name}: sync {sync.name}: "
                              f"{exc}") from None
        return PreparedSync(sync, mapper)

    def run(self, prepared: "PreparedSync") -> SyncReport:
        sync, spec = prepared.sync, prepared.sync.spec
        report = SyncReport(sync.name, sync.model.name, spec.object, spec.behaviour)
        report.start()
        if spec.object == "contact_list":
            report.finish("skipped", "contact list mirror syncs are not run by this version")
            return report
        requests_before, bytes_before = self.client.requests_sent, self.client.bytes_sent
        try:
            self._send_contacts(sync, prepared.mapper, report)
        except (ConfigError, AuthError, PermissionDenied, RequestRejected, TransientError) as exc:
            report.finish("failed", str(exc))
        else:
            report.finish()
        finally:
            report.api_requests = self.client.requests_sent - requests_before
            report.bytes_sent = self.client.bytes_sent - bytes_before
        return report

    def _send_contacts(self, sync: Sync, mapper: RowMapper, report: SyncReport) -> None:
        create = sync.spec.behaviour == "update_or_create"
        batcher = ContactBatcher(mapper.key_id, self.options.max_batch_contacts, self.options.max_batch_bytes)
        seen: set[str] = set()
        pending: set[Future] = set()
        failure: list[Exception] = []

        def settle(done: set[Future]) -> None:
            for fut in done:
                keys, outcome = fut.result()
                if isinstance(outcome, Exception):
                    report.failed_retryable += len(keys)
                    failure.append(outcome)
                    continue
                report.acknowledged += len(outcome.acknowledged)
                report.created += outcome.created
                report.updated += outcome.updated
                for key, (code, message) in outcome.rejected.items():
                    report.reject(key, str(code), message)

        def submit(pool: ThreadPoolExecutor, batch: tuple[list[str], bytes]) -> None:
            keys, body = batch
            report.sent += len(keys)
            pending.add(pool.submit(self._send_one, mapper.key_id, keys, body, create))
            while len(pending) >= self.options.in_flight:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                pending.difference_update(done)
                settle(done)

        with ThreadPoolExecutor(self.options.in_flight, thread_name_prefix=f"send-{sync.name}") as pool:
            for rows in self.source.rows(sync, mapper.read_columns):
                for row in rows:
                    report.rows_read += 1
                    key = mapper.key_of(row)
                    if isinstance(key, Rejection):
                        report.reject(key.key, key.code, key.reason)
                        continue
                    if key in seen:
                        report.reject(key, "duplicate_key", "the key appears more than once in the model")
                        continue
                    seen.add(key)
                    payload = mapper.payload(key, row)
                    if isinstance(payload, Rejection):
                        report.reject(payload.key, payload.code, payload.reason)
                        continue
                    full = batcher.add(key, orjson.dumps(payload))
                    if full:
                        submit(pool, full)
                    if failure:
                        break
                if failure:
                    break
            last = batcher.flush()
            if last and not failure:
                submit(pool, last)
            done, _ = wait(pending)
            settle(done)
        if failure:
            raise failure[0]

    def _send_one(self, key_id: str, keys: list[str], body: bytes, create: bool):
        """Runs in a sender thread; returns (keys, outcome or exception), never raises."""
        try:
            return keys, self.client.upsert_contacts(key_id, keys, body, create)
        except Exception as exc:  # noqa: BLE001 - handed back to the engine's thread
            return keys, exc
