"""One sync, start to end: lock -> recover -> diff in the warehouse -> map -> send -> checkpoint -> fold.

    plan(job)      lock the sync, fold what an interrupted run had acknowledged, then materialise this
                   run's plan with SQL: new and changed rows, departed keys, rows rejected by SQL
    prepare(job)   the mapper for the sync (needs the Emarsys field catalogue): configuration errors
                   surface here, before any sync writes anything
    send(job)      read the plan in seq order, map, batch, send; checkpoint every acknowledged batch;
                   fold the acknowledged rows into the snapshot; unlock

The engine sees the warehouse through `WarehouseAccess` (state SQL, no dbt import) and Emarsys through
`EmarsysClient`. A dry run does the diff into a temporary table, maps every row it would send, and
writes nothing to Emarsys or to the state.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import orjson

from .dbt.state import PLAN_VALUES_AT, PlanSummary, StateStore, SyncShape, mapping_fingerprint, new_run_id
from .emarsys import EmarsysClient, EmarsysError, FieldCatalog
from .emarsys.batching import MAX_BATCH_BYTES, MAX_BATCH_CONTACTS
from .errors import ConfigError
from .mapping import EMAIL_FIELD_ID, MappingError, Rejection, RowMapper, as_utc, hash_columns, read_columns
from .report import SyncReport
from .spec import Sync

log = logging.getLogger(__name__)

MAX_LIST_KEYS = 10_000
INTERRUPTED = ("the run was interrupted before this sync finished; the rows Emarsys acknowledged are kept, "
               "the rest are sent by the next run")
NOT_FOUND = 2008            # "No contact found with the external id"


class WarehouseAccess(Protocol):
    store: StateStore

    def connection(self, name: str) -> AbstractContextManager: ...

    def columns(self, sync: Sync) -> list[tuple[str, str]]: ...


class ProgressSink(Protocol):
    def phase(self, sync: str, text: str, total: int | None = None) -> None: ...

    def advance(self, sync: str, n: int) -> None: ...


class _NoProgress:
    def phase(self, sync: str, text: str, total: int | None = None) -> None:
        pass

    def advance(self, sync: str, n: int) -> None:
        pass


@dataclass(frozen=True)
class EngineOptions:
    max_batch_contacts: int = MAX_BATCH_CONTACTS
    max_batch_bytes: int = MAX_BATCH_BYTES
    in_flight: int = 4                 # concurrent requests per sync
    # Acknowledged batches are written to the state this many at a time (or after this long): one
    # checkpoint is a warehouse transaction, too dear for every batch of a large load. A crash re-sends
    # at most these plus the requests in flight.
    checkpoint_batches: int = 8
    checkpoint_seconds: float = 1.0
    read_page: int = 10_000            # plan rows read per query
    list_batch: int = MAX_LIST_KEYS    # keys per contact-list add/remove call
    lock_timeout: float = 60.0         # seconds to wait for another run of the same sync
    stale_lock_after: float = 600.0    # a lock without heartbeat for this long (other host) is taken over
    # Waits before re-adding keys a list add didn't find yet (2008 right after their upsert:
    # Emarsys is eventually consistent between the contact and the list services).
    add_retry_waits: tuple[float, ...] = (1.0, 3.0, 10.0)
    check_ids_limit: int = 10_000      # dry run: ask Emarsys about at most this many new keys


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    full_refresh: bool = False
    allow_mass_removal: bool = False
    samples: int = 5                   # dry run: sample rows per category
    # (Emarsys endpoint, API user) the run writes to: the state records it per sync (see runner's
    # check_emarsys_targets); None when unknown (a dry run without credentials).
    emarsys: tuple[str, str] | None = None


class SafetyRefusal(Exception):
    """A mirror run that would remove too much, or act on an empty model."""


class Interrupted(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM): requests in flight finish, what Emarsys
    acknowledged is kept, nothing more is sent."""


@dataclass
class SyncJob:
    sync: Sync
    shape: SyncShape
    report: SyncReport
    run_id: str = field(default_factory=new_run_id)
    plan: PlanSummary | None = None
    mapper: RowMapper | None = None
    locked: bool = False
    recorded: bool = False
    list_members: int | None = None     # mirror full refresh: the list's members read from Emarsys
    rebind: bool = False                # --full-refresh to another Emarsys: forget the old snapshot first

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def is_mirror(self) -> bool:
        return self.sync.spec.behaviour == "mirror"

    @property
    def needs_sending(self) -> bool:
        return self.plan is not None and self.plan.has_work and not self.report.finished


def build_shape(sync: Sync, columns: list[tuple[str, str]]) -> SyncShape:
    """What the warehouse needs to know about a sync; ConfigError naming file/model/sync when a column
    the declaration names is not in the model."""
    spec, model = sync.spec, sync.model
    names = [name for name, _ in columns]
    try:
        read = read_columns(spec, names)
    except MappingError as exc:
        raise ConfigError(f"{model.yaml_path}: model {model.name}: sync {sync.name}: {exc}") from None
    if not model.relation_name:
        raise ConfigError(f"model {model.name} has no relation to read")
    key_field = str(spec.key.field).strip().lower()
    email_key = key_field in ("email", str(EMAIL_FIELD_ID), "e-mail")
    return SyncShape(
        name=sync.name, model_relation=model.relation_name, key_column=read[0],
        lower_key=email_key and spec.normalize_email, email_key=email_key, read_columns=tuple(read),
        hash_columns=tuple(hash_columns(spec, names)), column_types=dict(columns),
        fingerprint=mapping_fingerprint(spec), mirror=spec.behaviour == "mirror")


# -- batches ------------------------------------------------------------------------------------------


Rejected = tuple[int, "str | None", str, str]      # (seq, key, code, message)


@dataclass
class _Batch:
    """One request's worth of plan rows: the seq range it settles, the keys it sends, the rows of that
    range already rejected before sending."""

    ranges: list[tuple[int, int]]
    keys: list[str]
    seqs: list[int]
    body: bytes = b""
    rejections: list[Rejected] = field(default_factory=list)
    # Per key: the state already held it (so a mirror's list already has it as a member).
    known: list[bool] = field(default_factory=list)

    def seq_of(self) -> dict[str, int]:
        return dict(zip(self.keys, self.seqs))

    @property
    def rows(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)


class _RangeBatcher:
    """Mapped plan rows -> request bodies under the count and byte caps, with the bookkeeping of which
    seq range each body settles (its rows, and the rows of that range rejected before sending).

    A body is encoded in one call for up to `max_batch_contacts` contacts; only when that is over the
    byte cap (contacts of tens of kilobytes each) are they encoded one by one to find how many fit,
    and a contact over the cap on its own is rejected. The bytes are those of ContactBatcher's bodies.
    Keys are unique within a plan (the diff rejects duplicates), so one body never holds a key twice.
    """

    def __init__(self, key_id: str, options: EngineOptions, start: int):
        self.head = b'{"key_id":' + orjson.dumps(str(key_id)) + b',"contacts":'
        self.tail = b"}"
        self.max_contacts, self.max_bytes = options.max_batch_contacts, options.max_batch_bytes
        self.seqs: list[int] = []
        self.keys: list[str] = []
        self.known: list[bool] = []
        self.payloads: list[dict] = []
        self.rejections: list[Rejected] = []
        self.start = start

    def reject(self, seq: int, key: str | None, code: str, message: str) -> None:
        self.rejections.append((seq, key, code, message))

    def extend(self, seqs: list[int], keys: list[str], known: list[bool], payloads: list[dict]) -> list[_Batch]:
        """Add mapped rows (in seq order); return the batches they complete."""
        self.seqs += seqs
        self.keys += keys
        self.known += known
        self.payloads += payloads
        batches = []
        while len(self.keys) >= self.max_contacts:
            batch = self._cut()
            if batch is not None:
                batches.append(batch)
        return batches

    def flush(self, end: int) -> list[_Batch]:
        """The rest, the last batch settling the range up to `end` (the plan's last row)."""
        batches = []
        while self.keys:
            batch = self._cut(end)
            if batch is not None:
                batches.append(batch)
        if self.rejections or self.start <= end:
            batches.append(_Batch([(self.start, end)], [], [], b"", self.rejections, []))
            self.rejections, self.start = [], end + 1
        return batches

    def _cut(self, end: int | None = None) -> _Batch | None:
        n = min(len(self.keys), self.max_contacts)
        body = self.head + orjson.dumps(self.payloads[:n]) + self.tail
        if len(body) > self.max_bytes:
            n, body = self._fit()
            # Contacts over the cap alone were dropped; if the rest fit, more rows may join them.
            if n == 0 or (end is None and n == len(self.keys) < self.max_contacts):
                return None
        keys, seqs, known = self.keys[:n], self.seqs[:n], self.known[:n]
        del self.keys[:n], self.seqs[:n], self.known[:n], self.payloads[:n]
        # The last body of the plan settles the rest of its range too, rejections included.
        hi = end if end is not None and not self.keys else seqs[-1]
        taken = [r for r in self.rejections if r[0] <= hi]
        self.rejections = [r for r in self.rejections if r[0] > hi]
        batch = _Batch([(self.start, hi)], keys, seqs, body, taken, known)
        self.start = hi + 1
        return batch

    def _fit(self) -> tuple[int, bytes]:
        """How many of the first contacts fit in one body under the byte cap, and that body. A contact
        over the cap on its own is rejected (it can never be sent) and dropped from the rows."""
        empty = len(self.head) + len(self.tail) + 2    # the brackets of the contacts array
        parts: list[bytes] = []
        size = empty
        i = 0
        while i < len(self.keys) and len(parts) < self.max_contacts:
            encoded = orjson.dumps(self.payloads[i])
            if empty + len(encoded) > self.max_bytes:
                self.reject(self.seqs[i], self.keys[i], "too_large",
                            f"the contact {self.keys[i]!r} encodes to {len(encoded)} bytes, over the "
                            f"{self.max_bytes}-byte request cap")
                del self.keys[i], self.seqs[i], self.known[i], self.payloads[i]
                continue
            grown = size + len(encoded) + (1 if parts else 0)
            if grown > self.max_bytes:
                break
            parts.append(encoded)
            size = grown
            i += 1
        return i, self.head + b"[" + b",".join(parts) + b"]" + self.tail


class _Checkpoints:
    """Acknowledged seq ranges and their rejections, gathered and written a few batches at a time."""

    def __init__(self, store: Any, job: "SyncJob", options: EngineOptions):
        self.store, self.job = store, job
        self.every, self.seconds = max(1, options.checkpoint_batches), options.checkpoint_seconds
        self.ranges: list[tuple[int, int]] = []
        self.rejections: list[Rejected] = []
        self.batches = 0
        self.last = time.monotonic()

    def add(self, batch: "_Batch") -> None:
        self.ranges += batch.ranges
        self.rejections += batch.rejections
        self.batches += 1
        if self.batches >= self.every or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.ranges or self.rejections:
            self.store.checkpoint(self.job.name, self.job.run_id, _merged(self.ranges), self.rejections)
        self.ranges, self.rejections, self.batches, self.last = [], [], 0, time.monotonic()


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent and overlapping seq ranges as one: fewer progress rows for the same rows."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class _InFlight:
    """Requests of one sync in flight on a thread pool. `submit` blocks while `limit` are pending;
    results are settled on the submitting thread (where the warehouse connection is)."""

    def __init__(self, pool: ThreadPoolExecutor, limit: int, failures: list[Exception]):
        self.pool, self.limit, self.failures = pool, limit, failures
        self.pending: dict[Future, tuple[_Batch, Callable]] = {}

    def submit(self, fn: Callable[[], Any], batch: _Batch, on_done: Callable[[_Batch, Any], None]) -> bool:
        """Send when there is room; False (nothing sent) once a request has failed for good."""
        while len(self.pending) >= self.limit:
            self.settle(block=True)
        if self.failures:
            return False
        self.pending[self.pool.submit(_capture, fn)] = (batch, on_done)
        return True

    def settle(self, block: bool = False) -> None:
        if not self.pending:
            return
        done, _ = wait(list(self.pending), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for fut in done:
            batch, on_done = self.pending.pop(fut)
            on_done(batch, fut.result())

    def drain(self) -> None:
        while self.pending:
            self.settle(block=True)


def _capture(fn: Callable[[], Any]) -> Any:
    """Run in a sender thread; hand an exception back as the result instead of raising."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - settled (and re-raised if fatal) on the engine's thread
        return exc


# -- the engine ---------------------------------------------------------------------------------------


class Engine:
    def __init__(self, warehouse: WarehouseAccess, options: EngineOptions | None = None,
                 run: RunOptions | None = None, progress: ProgressSink | None = None,
                 stop: threading.Event | None = None):
        self.warehouse = warehouse
        self.options = options or EngineOptions()
        self.run_options = run or RunOptions()
        self.progress = progress or _NoProgress()
        # Set (by a signal handler, or `cancel`) to stop every sync at its next batch.
        self._stop = stop or threading.Event()

    def cancel(self) -> None:
        """Stop every sync at its next batch (called from another thread, e.g. on Ctrl-C)."""
        self._stop.set()

    def _should_stop(self, failures: list[Exception]) -> bool:
        if self._stop.is_set() and not failures:
            failures.append(Interrupted(INTERRUPTED))
        return bool(failures)

    @property
    def store(self) -> StateStore:
        return self.warehouse.store

    # -- plan ---------------------------------------------------------------------------------

    def plan(self, job: SyncJob, client: EmarsysClient | None = None) -> None:
        """Lock, recover, diff (in the job's own warehouse connection). Failures end the job's report."""
        report, store = job.report, self.store
        if self._stop.is_set():
            report.finish("failed", INTERRUPTED)
            return
        t0 = time.monotonic()
        with self.warehouse.connection(f"emarsys-{job.name}"):
            try:
                store.acquire_lock(job.name, job.run_id, self.options.lock_timeout, self.options.stale_lock_after)
                job.locked = True
                store.record_run_start(job.run_id, job.name, job.sync.model.name, job.sync.spec.object,
                                       job.sync.spec.behaviour, self.run_options.full_refresh)
                job.recorded = True
                report.run_id = job.run_id   # the results file joins sync_runs on it
                for recovery in store.recover(job.name):
                    report.recovered += recovery.acknowledged + recovery.removed
                    log.warning("sync %s: run %s was interrupted; kept the %d rows it had acknowledged",
                                job.name, recovery.run_id, recovery.acknowledged + recovery.removed)
                if self.run_options.emarsys is not None:
                    store.bind_target(job.name, *self.run_options.emarsys, forget=job.rebind)
                self.progress.phase(job.name, "comparing the model with the last acknowledged state")
                members_table = None
                if job.is_mirror and self.run_options.full_refresh:
                    if client is None:
                        raise ConfigError("a full refresh of a contact list needs Emarsys credentials")
                    members_table = self._read_list_members(job, client)
                try:
                    job.plan = store.create_plan(job.shape, job.run_id, full_refresh=self.run_options.full_refresh,
                                                 members_table=members_table)
                finally:
                    if members_table:
                        store.drop_table(members_table)
                self._account_plan(job)
                if not job.plan.has_work:
                    # Nothing for Emarsys: record the SQL rejections and the departed keys now.
                    store.fold(job.name, job.run_id, job.plan.table, completed=True)
                    self._end(job, None)
            except Exception as exc:  # noqa: BLE001 - a sync's failure is reported, the others go on
                self._abandon(job, exc)
            finally:
                report.plan_seconds = round(time.monotonic() - t0, 3)

    def _account_plan(self, job: SyncJob) -> None:
        plan, report = job.plan, job.report
        assert plan is not None
        report.rows_read = plan.model_rows
        report.unchanged = plan.unchanged
        report.planned_new, report.planned_changed = plan.new, plan.changed
        report.planned_removals, report.departed = plan.removals, plan.forgotten
        for key, code, key_rows in self.store.sql_rejections(plan.table, limit=20):
            reason = (f"the key appears {key_rows} times in the model; every row of it is rejected"
                      if code == "duplicate_key" else
                      f"the key column {job.shape.key_column!r} is null or empty" if key is None else
                      f"{key!r} is not a valid email address")
            report.reject(key, code, reason, count=0)
        for code, count in plan.sql_rejected_by_code.items():
            report.rejected += count
            report.rejected_by_code[code] = report.rejected_by_code.get(code, 0) + count

    def _read_list_members(self, job: SyncJob, client: EmarsysClient) -> str | None:
        """A mirror's full refresh: the list's real members (id and email) into a state table."""
        spec = job.sync.spec
        found = client.find_contact_list(spec.list or "")
        table = self.store.create_members_table(job.name, temporary=self.run_options.dry_run)
        job.list_members = 0
        if found is None:
            return table
        job.report.list_id = found.id
        self.progress.phase(job.name, f"reading the members of list {spec.list!r}")
        try:
            for page in client.iter_list_member_ids(found.id):
                job.list_members += len(page)
                for start in range(0, len(page), 1000):
                    ids = page[start:start + 1000]
                    rows, _errors = client.get_contacts("id", [str(i) for i in ids], [EMAIL_FIELD_ID])
                    emails = {int(r["id"]): r.get(str(EMAIL_FIELD_ID)) for r in rows if r.get("id") is not None}
                    self.store.add_members(table, [(i, emails.get(i)) for i in ids], job.shape.lower_key)
        except EmarsysError as exc:
            self.store.drop_table(table)
            raise EmarsysError(f"full refresh of list {spec.list!r}: its members can't be read, so nothing was "
                            f"changed: {exc}") from None
        return table

    # -- dry run ------------------------------------------------------------------------------

    def preview(self, job: SyncJob, client: EmarsysClient | None, catalog: FieldCatalog | None) -> None:
        """A dry run: the plan in a temporary table, every row it would send mapped (so rejections are
        predicted), samples per category; nothing is written to Emarsys or to the state."""
        report, store = job.report, self.store
        report.dry_run = True
        t0 = time.monotonic()
        notes: list[str] = []
        with self.warehouse.connection(f"emarsys-{job.name}"):
            members_table = None
            try:
                if store.exists() and store.pending_plans(job.name):
                    notes.append("an interrupted run left a plan: the next run first keeps the rows it had "
                                 "sent, so it sends fewer than shown here")
                if job.is_mirror and self.run_options.full_refresh:
                    if client is None:
                        raise ConfigError("a full refresh of a contact list reads the list from Emarsys: "
                                          "set the Emarsys credentials")
                    members_table = self._read_list_members(job, client)
                job.plan = store.create_plan(job.shape, job.run_id, full_refresh=self.run_options.full_refresh,
                                             temporary=True, members_table=members_table)
                self._account_plan(job)
                if catalog is not None:
                    self.prepare(job, catalog)
                else:
                    notes.append("no Emarsys credentials: rows were not checked against the field catalogue")
                self._preview_rows(job, client)
                if job.is_mirror:
                    try:
                        self._check_safety(job)
                    except SafetyRefusal as exc:
                        report.finish("failed", f"the run would refuse: {exc}")
                if not report.finished:
                    report.finish("planned", "; ".join(notes))
            except Exception as exc:  # noqa: BLE001
                if not isinstance(exc, (EmarsysError, ConfigError)):
                    log.exception("sync %s: dry run failed", job.name)
                report.finish("failed", str(exc) if isinstance(exc, (EmarsysError, ConfigError))
                              else f"{type(exc).__name__}: {exc}")
            finally:
                report.plan_seconds = round(time.monotonic() - t0, 3)
                try:
                    if job.plan is not None:
                        store.drop_temporary_plan(job.plan.table)
                    if members_table is not None:
                        store.drop_temporary_plan(members_table)
                except Exception:  # noqa: BLE001 - temporary tables go with the connection anyway
                    log.debug("could not drop the dry run's temporary tables", exc_info=True)

    def _preview_rows(self, job: SyncJob, client: EmarsysClient | None) -> None:
        plan, mapper, report, store = job.plan, job.mapper, job.report, self.store
        assert plan is not None
        limit = max(self.run_options.samples, 0)
        samples: dict[str, list[dict]] = {"new": [], "changed": [], "removals": []}
        new_keys: list[str] = []
        utc = job.shape.utc_columns
        lo, hi = plan.upsert_range
        for page in store.read_plan(plan.table, lo, hi, self.options.read_page, len(job.shape.read_columns)):
            for row in page:
                if mapper is not None:
                    payload = self._payload(mapper, row.key, row.values)
                    if isinstance(payload, Rejection):
                        report.reject(payload.key, payload.code, payload.reason)
                        continue
                category = "changed" if row.known else "new"
                if len(samples[category]) < limit:
                    samples[category].append({"key": row.key, **{
                        column: as_utc(value) if column in utc else value
                        for column, value in zip(job.shape.read_columns, row.values)}})
                if not row.known and row.key is not None and len(new_keys) <= self.options.check_ids_limit:
                    new_keys.append(row.key)
        lo, hi = plan.remove_range
        if lo <= hi and limit:
            for page in store.read_plan(plan.table, lo, min(hi, lo + limit - 1), limit, 0):
                samples["removals"] += [{"key": row.key, **({"contact_id": row.member_id}
                                                            if row.member_id is not None else {})}
                                        for row in page]
        report.samples = {k: v for k, v in samples.items() if v}
        # Emarsys can tell which new keys already exist (checkids, 1000 keys a call): worth it for a
        # bounded number of keys only.
        if (client is None or mapper is None or not new_keys or len(new_keys) > self.options.check_ids_limit
                or mapper.key_id in ("id", "uid")):
            return
        existing: set[str] = set()
        for start in range(0, len(new_keys), 1000):
            existing.update(client.check_ids(mapper.key_id, new_keys[start:start + 1000]))
        found = sum(1 for k in new_keys if k in existing)
        report.would_update = plan.changed + found
        if job.sync.spec.behaviour == "update_only":
            report.would_create = 0
            for key in new_keys:
                if key not in existing:
                    report.reject(key, str(NOT_FOUND), "no contact has this key in Emarsys, and update_only "
                                                       "never creates one")
        else:
            report.would_create = len(new_keys) - found

    # -- prepare ------------------------------------------------------------------------------

    def prepare(self, job: SyncJob, catalog: FieldCatalog) -> None:
        """The row mapper; raises ConfigError naming the file, model and sync."""
        sync = job.sync
        where = f"{sync.model.yaml_path}: model {sync.model.name}: sync {sync.name}"
        try:
            job.mapper = RowMapper(sync.spec, catalog, list(job.shape.column_types), job.shape.utc_columns)
        except MappingError as exc:
            # Placed as validate places them: file:line and the key path in the declaration.
            raise ConfigError("\n".join(str(sync.problem(path, message)) for path, message in exc.located())) \
                from None
        key_is_email = job.mapper.key_field is not None and job.mapper.key_field.id == EMAIL_FIELD_ID
        if key_is_email != job.shape.email_key:
            # The warehouse normalised (or not) the keys by the declared name, before the catalogue was
            # known; a name for the email field other than these would normalise differently.
            raise ConfigError(f"{where}: key.field {sync.spec.key.field!r} is "
                              f"{'' if key_is_email else 'not '}Emarsys's email field; write it as "
                              f"{'`email` (or 3)' if key_is_email else 'its field id'}")

    def abandon(self, job: SyncJob, reason: str, status: str = "skipped") -> None:
        """Give up a planned job before anything was sent: `skipped` (another sync's configuration
        error stopped the run) or `failed` (Emarsys couldn't be reached)."""
        with self.warehouse.connection(f"emarsys-{job.name}"):
            if job.plan is not None:
                self.store.drop_plan(job.name, job.run_id, job.plan.table)
                job.plan = None
            self._end(job, status, reason)

    # -- send ---------------------------------------------------------------------------------

    def send(self, job: SyncJob, client: EmarsysClient) -> None:
        report = job.report
        t0 = time.monotonic()
        requests_before, bytes_before = client.requests_sent, client.bytes_sent
        with self.warehouse.connection(f"emarsys-{job.name}"):
            outcome: tuple[str | None, str] = (None, "")
            completed = False
            try:
                if self._should_stop([]):
                    raise Interrupted(INTERRUPTED)
                if job.is_mirror:
                    self._check_safety(job)
                    self._send_mirror(job, client)
                else:
                    self._send_contacts(job, client)
                completed = True
            except SafetyRefusal as exc:
                self.store.drop_plan(job.name, job.run_id, job.plan.table)  # type: ignore[union-attr]
                job.plan = None
                outcome = ("failed", str(exc))
            except Interrupted as exc:
                outcome = ("failed", str(exc))
            except (EmarsysError, ConfigError) as exc:
                outcome = ("failed", str(exc))
            except Exception as exc:  # noqa: BLE001
                log.exception("sync %s failed", job.name)
                outcome = ("failed", f"{type(exc).__name__}: {exc}")
            finally:
                report.api_requests = client.requests_sent - requests_before
                report.bytes_sent = client.bytes_sent - bytes_before
                report.send_seconds = round(time.monotonic() - t0, 3)
                if job.plan is not None:
                    try:
                        self.store.fold(job.name, job.run_id, job.plan.table, completed=completed)
                    except Exception as exc:  # noqa: BLE001 - the next run's recovery folds it
                        log.exception("sync %s: could not fold the acknowledged rows", job.name)
                        outcome = ("failed", f"could not record the acknowledged rows (the next run "
                                             f"will): {exc}")
                if outcome[0] is None and not completed:     # KeyboardInterrupt on this thread
                    outcome = ("failed", INTERRUPTED)
                if report.failed_retryable and outcome[0] is None:
                    outcome = ("failed", f"{report.failed_retryable} rows could not be sent; they are sent "
                                         "again on the next run")
                self._end(job, *outcome)

    # contacts: update or create, update only

    def _send_contacts(self, job: SyncJob, client: EmarsysClient) -> None:
        plan, mapper = job.plan, job.mapper
        assert plan is not None and mapper is not None
        create = job.sync.spec.behaviour == "update_or_create"
        lo, hi = plan.upsert_range
        self.progress.phase(job.name, "sending contacts", total=plan.upserts)
        failures: list[Exception] = []
        checkpoints = _Checkpoints(self.store, job, self.options)

        def on_upsert(batch: _Batch, outcome: Any) -> None:
            if isinstance(outcome, Exception):
                self._batch_failed(job, batch, outcome, failures)
                return
            self._settle_upsert(job, batch, outcome)
            checkpoints.add(batch)
            self.progress.advance(job.name, batch.rows)

        with ThreadPoolExecutor(self.options.in_flight, thread_name_prefix=f"send-{job.name}") as pool:
            flight = _InFlight(pool, self.options.in_flight, failures)
            try:
                for batch in self._upsert_batches(job, mapper, lo, hi, failures):
                    if not batch.keys:
                        checkpoints.add(batch)
                        self._count_rejections(job, batch.rejections)
                        self.progress.advance(job.name, batch.rows)
                        continue
                    if not flight.submit(
                            lambda b=batch: client.upsert_contacts(mapper.key_id, b.keys, b.body, create),
                            batch, on_upsert):
                        break
                    self._count_rejections(job, batch.rejections)
                    job.report.sent += len(batch.keys)
                    flight.settle()
                flight.drain()
            finally:
                # Whatever was acknowledged is kept, however the loop ended.
                checkpoints.flush()
        if failures:
            raise failures[0]

    def _upsert_batches(self, job: SyncJob, mapper: RowMapper, lo: int, hi: int, failures: list):
        """Plan rows lo..hi -> request bodies; rows that can't be sent become rejections in their range."""
        batcher = _RangeBatcher(mapper.key_id, self.options, lo)
        # The plan's raw rows (seq, key, known, member id, values...), mapped a page at a time, a
        # column at a time: a million-row sync makes no call per value for plain columns.
        raw_mapper = mapper.at_offset(PLAN_VALUES_AT)
        # A request's worth of rows at a time, so each body goes out as soon as it is ready and the
        # requests in flight keep Emarsys busy while the next rows are mapped.
        step = self.options.max_batch_contacts
        read = job.shape.read_columns
        kinds = mapper.column_kinds()
        unused = frozenset(i for i in range(len(read)) if i not in kinds)
        decimals_as_text = frozenset(i for i, c in enumerate(read)
                                     if c in job.shape.decimal_columns and kinds.get(i) == {"numeric"})
        for page in self.store.read_plan_raw(job.plan.table, lo, hi, self.options.read_page,  # type: ignore
                                             len(read), unused=unused, decimals_as_text=decimals_as_text):
            for at in range(0, len(page), step):
                for batch in batcher.extend(*self._mapped(raw_mapper, page[at:at + step], batcher)):
                    if self._should_stop(failures):
                        return
                    yield batch
        for batch in batcher.flush(hi):
            if self._should_stop(failures):
                return
            yield batch

    @staticmethod
    def _mapped(mapper: RowMapper, rows: list[tuple], batcher: _RangeBatcher,
                ) -> tuple[list[int], list[str], list[bool], list[dict]]:
        """Raw plan rows -> (seqs, keys, known, payloads) of the rows that can be sent; the others go
        to the batcher as rejections."""
        seqs = [row[0] for row in rows]
        if seqs and type(seqs[0]) is not int:
            seqs = list(map(int, seqs))
        keys = [row[1] for row in rows]
        known = [row[2] == 1 for row in rows]
        payloads, problems = mapper.payloads(rows, keys)
        if not problems:
            return seqs, keys, known, payloads   # type: ignore[return-value]
        for i in sorted(problems):
            batcher.reject(seqs[i], keys[i], problems[i].code, problems[i].reason)
        kept = [i for i in range(len(rows)) if i not in problems]
        return ([seqs[i] for i in kept], [keys[i] for i in kept], [known[i] for i in kept],  # type: ignore[misc]
                [payloads[i] for i in kept])   # type: ignore[misc]

    @staticmethod
    def _payload(mapper: RowMapper, key: str | None, values: tuple) -> dict | Rejection:
        if key is None:
            return Rejection(None, "the key is null", "invalid_key")
        problem = mapper.check_key(key)
        if problem is not None:
            return problem
        return mapper.payload(key, values)

    def _settle_upsert(self, job: SyncJob, batch: _Batch, outcome: Any) -> None:
        report = job.report
        seq_of = batch.seq_of()
        for key, (code, message) in outcome.rejected.items():
            batch.rejections.append((seq_of.get(key, 0), key, str(code), message))
            report.reject(key, str(code), message)
        with report._lock:
            report.acknowledged += len(outcome.acknowledged)
            report.created += outcome.created
            report.updated += outcome.updated

    def _batch_failed(self, job: SyncJob, batch: _Batch, exc: Exception, failures: list) -> None:
        """A request failed as a whole (after the client's retries): its rows are neither acknowledged
        nor rejected; they stay out of the snapshot and go again next run."""
        job.report.failed_retryable += len(batch.keys)
        # Rows of the range rejected before sending are still rejected: record them, without the range.
        if batch.rejections:
            self.store.checkpoint(job.name, job.run_id, [], batch.rejections)
        failures.append(exc)

    def _count_rejections(self, job: SyncJob, rejections: list[Rejected]) -> None:
        for _seq, key, code, message in rejections:
            job.report.reject(key, code, message)

    # mirror: contacts first, then list membership

    def _check_safety(self, job: SyncJob) -> None:
        plan, spec = job.plan, job.sync.spec
        assert plan is not None
        if self.run_options.allow_mass_removal:
            return
        list_name = spec.list
        if plan.model_rows == 0 and not spec.safety.allow_empty:
            raise SafetyRefusal(
                f"refusing to mirror an empty model into list {list_name!r}: model {job.sync.model.name} has no "
                f"rows, which would remove all {plan.snapshot_rows} members this sync put there. If the "
                "audience is really empty, pass --allow-mass-removal or set safety.allow_empty: true")
        # The members this sync put on the list (what the snapshot holds), or on a full refresh what
        # the list really holds in Emarsys.
        members = job.list_members if job.list_members is not None else plan.snapshot_rows
        if plan.removals and members:
            share = plan.removals / members
            limit = spec.safety.max_removal_share
            if share > limit:
                raise SafetyRefusal(
                    f"refusing to remove {plan.removals} of the {members} members of list {list_name!r} in one "
                    f"run ({share:.1%}; the limit is {limit:.0%}, safety.max_removal_share). If that is "
                    "intended, pass --allow-mass-removal or raise safety.max_removal_share")

    def _send_mirror(self, job: SyncJob, client: EmarsysClient) -> None:
        plan, mapper, spec = job.plan, job.mapper, job.sync.spec
        assert plan is not None and mapper is not None
        list_id = self._list_id(job, client)
        job.report.list_id = list_id
        key_id = mapper.key_id
        failures: list[Exception] = []
        self.progress.phase(job.name, f"updating the audience's contacts and list {spec.list!r}",
                            total=plan.upserts)
        adds = _Batch([], [], [])

        def on_add(batch: _Batch, outcome: Any) -> None:
            if isinstance(outcome, Exception):
                self._batch_failed(job, batch, outcome, failures)
                return
            seq_of = batch.seq_of()
            for key, (code, message) in outcome.rejected.items():
                batch.rejections.append((seq_of.get(key, 0), key, str(code), message))
                job.report.reject(key, str(code), message)
            # Added: acknowledged keys the state didn't hold. A changed row of a known key is a member
            # already; Emarsys acknowledges adding it again without counting it.
            acknowledged = set(outcome.acknowledged)
            job.report.added += sum(1 for key, known in zip(batch.keys, batch.known)
                                    if not known and key in acknowledged)
            self.store.checkpoint(job.name, job.run_id, batch.ranges, batch.rejections)
            self.progress.advance(job.name, batch.rows)

        def submit_adds(flight: _InFlight, force: bool) -> None:
            nonlocal adds
            if not adds.ranges or (not force and len(adds.keys) < self.options.list_batch):
                return
            batch, adds = adds, _Batch([], [], [])
            if not batch.keys:
                on_add(batch, _empty_outcome())
                return
            flight.submit(lambda b=batch: self._add_members(client, list_id, key_id, b.keys), batch, on_add)


        def on_upsert(batch: _Batch, outcome: Any) -> None:
            if isinstance(outcome, Exception):
                self._batch_failed(job, batch, outcome, failures)
                return
            self._settle_upsert(job, batch, outcome)
            # The contacts exist now; their membership is the next request. The range is checkpointed
            # when the add is acknowledged.
            rejected = set(outcome.rejected)
            for key, seq, known in zip(batch.keys, batch.seqs, batch.known):
                if key not in rejected:
                    adds.keys.append(key)
                    adds.seqs.append(seq)
                    adds.known.append(known)
            adds.ranges.extend(batch.ranges)
            adds.rejections.extend(batch.rejections)

        lo, hi = plan.upsert_range
        with ThreadPoolExecutor(self.options.in_flight, thread_name_prefix=f"send-{job.name}") as pool:
            flight = _InFlight(pool, self.options.in_flight, failures)
            for batch in self._upsert_batches(job, mapper, lo, hi, failures):
                if not batch.keys:
                    self._count_rejections(job, batch.rejections)
                    on_upsert(batch, _empty_outcome())
                else:
                    if not flight.submit(lambda b=batch: client.upsert_contacts(key_id, b.keys, b.body, True),
                                         batch, on_upsert):
                        break
                    self._count_rejections(job, batch.rejections)
                    job.report.sent += len(batch.keys)
                    flight.settle()
                submit_adds(flight, force=False)
            flight.drain()
            if not failures:
                submit_adds(flight, force=True)
                flight.drain()
            if failures:
                raise failures[0]
            self._remove_members(job, client, list_id, flight, failures)
            flight.drain()
        if failures:
            raise failures[0]

    def _list_id(self, job: SyncJob, client: EmarsysClient) -> int:
        name = job.sync.spec.list or ""
        found = client.find_contact_list(name)
        if found is not None:
            return found.id
        plan = job.plan
        if plan is not None and plan.snapshot_rows and not self.run_options.full_refresh:
            # The state's members are on a list of another name (renamed in the declaration) or on one
            # deleted in Emarsys: a new list would get only the changed rows, and the old one would be
            # left as it was. Nothing is sent before this check.
            raise SafetyRefusal(
                f"Emarsys has no contact list named {name!r}, but the state holds {plan.snapshot_rows} members "
                f"this sync put on its list: was the list renamed in the declaration, or deleted in Emarsys? "
                "Run with --full-refresh to fill a new list with the model's rows (a list under another "
                "name is left as it is), or give the declaration the list's name in Emarsys")
        log.info("sync %s: creating contact list %r", job.name, name)
        return client.create_contact_list(name)

    def _add_members(self, client: EmarsysClient, list_id: int, key_id: str, keys: list[str]) -> Any:
        outcome = client.add_to_list(list_id, key_id, keys)
        for pause in self.options.add_retry_waits:
            missing = [k for k, (code, _) in outcome.rejected.items() if code == NOT_FOUND]
            if not missing:
                break
            time.sleep(pause)
            retry = client.add_to_list(list_id, key_id, missing)
            for key in missing:
                outcome.rejected.pop(key, None)
            outcome.acknowledged.extend(retry.acknowledged)
            outcome.rejected.update(retry.rejected)
        return outcome

    def _remove_members(self, job: SyncJob, client: EmarsysClient, list_id: int, flight: _InFlight,
                        failures: list) -> None:
        plan, mapper = job.plan, job.mapper
        assert plan is not None and mapper is not None
        lo, hi = plan.remove_range
        if lo > hi:
            return
        self.progress.phase(job.name, f"removing members who left list {job.sync.spec.list!r}",
                            total=plan.removals)

        def on_remove(batch: _Batch, outcome: Any) -> None:
            if isinstance(outcome, Exception):
                self._batch_failed(job, batch, outcome, failures)
                return
            seq_of = batch.seq_of()
            removed = len(outcome.acknowledged)
            for key, (code, message) in outcome.rejected.items():
                if code == NOT_FOUND:
                    removed += 1      # no such contact (any more): it is not a member either
                    continue
                batch.rejections.append((seq_of.get(key, 0), key, str(code), message))
                job.report.reject(key, str(code), message)
            job.report.removed += removed
            self.store.checkpoint(job.name, job.run_id, batch.ranges, batch.rejections)
            self.progress.advance(job.name, batch.rows)

        def submit(batch: _Batch, key_id: str) -> None:
            if flight.submit(lambda b=batch: client.remove_from_list(list_id, key_id, b.keys), batch, on_remove):
                job.report.sent += len(batch.keys)

        # A normal run removes members by the key they were added with; a full refresh removes what the
        # list really holds, by Emarsys contact id (a plan has one kind or the other).
        batch, key_id, start = _Batch([], [], []), mapper.key_id, lo
        for page in self.store.read_plan(plan.table, lo, hi, self.options.read_page, 0):
            for row in page:
                if self._should_stop(failures):
                    return
                key = str(row.member_id) if row.member_id is not None else row.key
                if key is None:
                    continue
                key_id = "id" if row.member_id is not None else mapper.key_id
                batch.keys.append(key)
                batch.seqs.append(row.seq)
                if len(batch.keys) >= self.options.list_batch:
                    batch.ranges.append((start, row.seq))
                    start = row.seq + 1
                    submit(batch, key_id)
                    batch = _Batch([], [], [])
        batch.ranges.append((start, hi))
        if batch.keys:
            submit(batch, key_id)
        else:
            self.store.checkpoint(job.name, job.run_id, batch.ranges, [])

    # -- end ------------------------------------------------------------------------------------

    def _abandon(self, job: SyncJob, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, (EmarsysError, ConfigError)) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, (EmarsysError, ConfigError)):
            log.exception("sync %s failed while planning", job.name)
        try:
            if job.plan is not None:
                self.store.drop_plan(job.name, job.run_id, job.plan.table)
                job.plan = None
        except Exception:  # noqa: BLE001
            log.exception("sync %s: could not drop its plan", job.name)
        self._end(job, "failed", message)

    def _end(self, job: SyncJob, status: str | None, message: str = "") -> None:
        report = job.report
        if not report.finished:
            report.finish(status, message)
        try:
            if job.recorded:
                self.store.record_run_end(job.run_id, job.name, report.status, report.message, {
                    "model_rows": report.rows_read, "planned_new": report.planned_new,
                    "planned_changed": report.planned_changed, "planned_removals": report.planned_removals,
                    "unchanged": report.unchanged, "acknowledged": report.acknowledged,
                    "created": report.created, "updated": report.updated, "removed": report.removed,
                    "rejected": report.rejected, "api_requests": report.api_requests})
        except Exception:  # noqa: BLE001 - history is best effort; the snapshot is what matters
            log.exception("sync %s: could not record the run's history", job.name)
        finally:
            if job.locked:
                try:
                    self.store.release_lock(job.name, job.run_id)
                except Exception:  # noqa: BLE001 - a dead lock is taken over by the next run
                    log.exception("sync %s: could not release its lock", job.name)
                job.locked = False


def _empty_outcome() -> Any:
    from .emarsys import BatchOutcome

    return BatchOutcome()
