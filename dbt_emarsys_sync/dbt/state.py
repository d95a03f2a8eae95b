"""The runner's state, kept in the warehouse next to the models, and the diff computed there.

Everything lives in one schema of its own (default `<target schema>_emarsys_sync`), reached through the
project's dbt adapter; with DuckDB that is the same database file. Tables (all keyed by `sync_name`):

    schema_version   migrations applied to this schema
    sync_snapshot    what Emarsys acknowledged: normalised key + hash of the mapped values (and of the
                     sync's mapping fingerprint, so a changed mapping re-sends every row)
    sync_rejected    rows the runner or Emarsys rejected: key, code, message, run
    sync_runs        one row per run of a sync: status, counts, timings
    sync_locks       one row per sync being run: who holds it, since when, last heartbeat
    sync_plans       plans being sent (a plan left here by a crashed run is recovered by the next one)
    sync_progress    acknowledged seq ranges of a plan, written as each batch is acknowledged
    plan_<sync>      a run's plan: seq, action, normalised key, hash, the mapped columns

A run: lock -> recover a crashed plan -> `create table plan_<sync> as <diff>` (new and changed rows,
departed keys, rows rejected by SQL: null keys, duplicate keys) -> send in seq order, checkpointing each
acknowledged batch as one row in sync_progress (plus its rejected rows) -> fold the acknowledged rows into
sync_snapshot with set-based SQL -> unlock. Unchanged rows never leave the warehouse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from ..errors import ConfigError, SyncFailed
from .warehouse import Warehouse, literal, wait_pause

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# Part of every row hash: bump it when the way values are hashed changes, so every row is re-sent once.
HASH_FORMAT = 1
DEFAULT_SCHEMA_SUFFIX = "_emarsys_sync"
STATE_SCHEMA_ENV = "EMARSYS_SYNC_STATE_SCHEMA"

# Plan actions, in the order their rows are numbered (and sent).
REJECT, UPSERT, REMOVE, FORGET = "reject", "upsert", "remove", "forget"
PHASES = {REJECT: 0, UPSERT: 1, REMOVE: 2, FORGET: 3}
# A plan row's seq is phase * PHASE_STRIDE + its number within the phase: ordered by phase, contiguous
# within one, and numbered per phase without sorting the whole plan (a sort of every row costs a
# million-row plan 1.5 s of its 3.7 s on DuckDB).
PHASE_STRIDE = 10 ** 12


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_run_id() -> str:
    """Sortable and readable: 20261203T161502Z-3f9a1c."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + os.urandom(3).hex()


def default_state_schema(target_schema: str) -> str:
    return f"{target_schema}{DEFAULT_SCHEMA_SUFFIX}"


def slug(sync_name: str) -> str:
    """A table-name part for a sync: lower-case, short enough for Postgres' 63-byte identifiers."""
    base = re.sub(r"[^a-z0-9_]", "_", sync_name.lower())[:40]
    return f"{base}_{hashlib.sha1(sync_name.encode()).hexdigest()[:8]}"


# -- what the SQL needs to know about a sync ------------------------------------------------------


@dataclass(frozen=True)
class SyncShape:
    """A sync as the warehouse sees it: which model columns it reads and how its key is normalised."""

    name: str
    model_relation: str
    key_column: str                 # the model's column, as the model spells it
    lower_key: bool                 # email keys with normalize_email: lower-case
    email_key: bool                 # the key is the email field (checked for the shape of an address)
    read_columns: tuple[str, ...]   # the columns the mapper reads (key first), as the model spells them
    hash_columns: tuple[str, ...]   # the mapped columns whose values decide "changed"
    column_types: dict[str, str]
    fingerprint: str
    mirror: bool

    @property
    def utc_columns(self) -> frozenset[str]:
        """Read columns holding tz-aware timestamps: the plan keeps them as UTC wall time (naive), which
        a driver hands to Python several times faster than tz-aware values; `mapping.as_utc` makes them
        tz-aware again."""
        return frozenset(c for c in self.read_columns if is_tz_aware(self.column_types.get(c, "")))

    @property
    def decimal_columns(self) -> frozenset[str]:
        """Read columns of a decimal type (DECIMAL, NUMERIC)."""
        return frozenset(c for c in self.read_columns
                         if self.column_types.get(c, "").lower().startswith(("decimal", "numeric")))

    @property
    def departed_action(self) -> str:
        # Contacts are never deleted: a departed key only leaves the snapshot. List members are removed.
        return REMOVE if self.mirror else FORGET


def is_tz_aware(dtype: str) -> bool:
    """A timestamp type with a time zone, as PostgreSQL, DuckDB and Redshift name it."""
    dtype = dtype.lower()
    return "with time zone" in dtype or dtype == "timestamptz"


def mapping_fingerprint(spec: Any) -> str:
    """A digest of everything in a declaration that changes what Emarsys receives for a row."""
    data = {
        "hash_format": HASH_FORMAT,
        "object": spec.object,
        "behaviour": spec.behaviour,
        "key": {"column": spec.key.column.lower(), "field": str(spec.key.field)},
        "fields": sorted([c.lower(), str(f)] for c, f in spec.fields.items()),
        "constants": sorted([str(k), v] for k, v in spec.constants.items()),
        "list": spec.list,
        "null_policy": spec.null_policy,
        "normalize_email": spec.normalize_email,
        "truncate_text": spec.truncate_text,
        "timezone": spec.timezone,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- results ---------------------------------------------------------------------------------------


@dataclass
class PlanSummary:
    """What a plan holds, from SQL alone."""

    run_id: str
    table: str
    model_rows: int = 0
    new: int = 0                    # keys this sync never had acknowledged
    changed: int = 0                # keys acknowledged before, values (or mapping) changed since
    removals: int = 0               # mirror: members to remove
    forgotten: int = 0              # contacts: keys that left the model (contacts are never deleted)
    sql_rejected: int = 0           # rows rejected by SQL: null or empty key, duplicate key
    sql_rejected_by_code: dict[str, int] = field(default_factory=dict)
    upsert_range: tuple[int, int] = (1, 0)     # seq range of the rows to send
    remove_range: tuple[int, int] = (1, 0)
    snapshot_rows: int = 0          # acknowledged keys before this run (mirror: members we put there)
    full_refresh: bool = False

    @property
    def upserts(self) -> int:
        return self.new + self.changed

    @property
    def unchanged(self) -> int:
        return max(self.model_rows - self.upserts - self.sql_rejected, 0)

    @property
    def has_work(self) -> bool:
        return bool(self.upserts or self.removals)


@dataclass
class Recovery:
    run_id: str
    acknowledged: int
    removed: int


PLAN_VALUES_AT = 4   # where the read columns start in read_plan_raw's rows


class PlanRow(NamedTuple):
    """One row of a plan. A tuple, not a dataclass: a large sync reads millions of them."""
    seq: int
    key: str | None
    known: bool
    member_id: int | None
    values: tuple                   # the read_columns, in order


@dataclass(frozen=True)
class LockInfo:
    sync_name: str
    run_id: str
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime
    process_started: str | None = None

    def describe(self) -> str:
        return (f"run {self.run_id} (pid {self.pid} on {self.host}, since "
                f"{self.acquired_at:%Y-%m-%d %H:%M:%S} UTC, last heartbeat {self.heartbeat_at:%H:%M:%S} UTC)")


class LockTimeout(SyncFailed):
    pass


# -- migrations ------------------------------------------------------------------------------------


def _migrations(store: "StateStore") -> list[tuple[int, list[str]]]:
    t, b, ts = store.wh.text_type, store.wh.bigint_type, store.wh.timestamp_type
    v1 = [
        f"create table if not exists {store.snapshot} (sync_name {t} not null, sync_key {t} not null, "
        f"row_hash {t} not null, run_id {t}, synced_at {ts})",
        f"create table if not exists {store.rejected} (sync_name {t} not null, sync_key {t}, code {t}, "
        f"message {t}, run_id {t}, plan_seq {b}, rejected_at {ts})",
        f"create table if not exists {store.runs} (run_id {t} not null, sync_name {t} not null, "
        f"model {t}, object {t}, behaviour {t}, status {t}, message {t}, full_refresh integer, "
        f"started_at {ts}, finished_at {ts}, model_rows {b}, planned_new {b}, planned_changed {b}, "
        f"planned_removals {b}, unchanged {b}, acknowledged {b}, created {b}, updated {b}, removed {b}, "
        f"rejected {b}, api_requests {b}, host {t}, pid {b})",
        f"create table if not exists {store.locks} (sync_name {t} not null, run_id {t} not null, "
        f"host {t}, pid {b}, process_started {t}, acquired_at {ts}, heartbeat_at {ts})",
        f"create table if not exists {store.plans} (sync_name {t} not null, run_id {t} not null, "
        f"plan_table {t} not null, full_refresh integer, created_at {ts})",
        f"create table if not exists {store.progress} (sync_name {t} not null, run_id {t} not null, "
        f"seq_lo {b} not null, seq_hi {b} not null, acked_at {ts})",
    ]
    if store.wh.dialect.indexes:
        v1 += [
            f"create unique index if not exists sync_snapshot_key on {store.snapshot} (sync_name, sync_key)",
            f"create index if not exists sync_rejected_key on {store.rejected} (sync_name, run_id)",
            f"create unique index if not exists sync_locks_sync on {store.locks} (sync_name)",
            f"create index if not exists sync_progress_run on {store.progress} (sync_name, run_id)",
            f"create index if not exists sync_runs_sync on {store.runs} (sync_name, started_at)",
        ]
    # 2: the Emarsys a sync's snapshot was acknowledged by, so that a run pointed at another one
    # doesn't take that snapshot for what the new one holds.
    v2 = [
        f"create table if not exists {store.targets} (sync_name {t} not null, emarsys {t} not null, "
        f"api_user {t}, bound_at {ts})",
    ]
    return [(1, v1), (2, v2)]


# -- the store ---------------------------------------------------------------------------------------


class StateStore:
    """The state schema: migrations, locks, plans, checkpoints, the fold, history, inspection."""

    # One process may run several syncs in threads over one DuckDB file: serialise lock-table updates
    # inside the process (across processes the warehouse does it: a unique index, or DuckDB's file lock).
    _process_lock = threading.Lock()

    def __init__(self, wh: Warehouse, schema: str | None = None):
        self.wh = wh
        self.schema = schema or os.environ.get(STATE_SCHEMA_ENV) or default_state_schema(wh.target_schema)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", self.schema):
            raise ConfigError(f"state schema {self.schema!r}: use letters, digits and _ only")
        rel = lambda name: wh.relation(self.schema, name)  # noqa: E731
        self.version_table = rel("schema_version")
        self.snapshot, self.rejected, self.runs = rel("sync_snapshot"), rel("sync_rejected"), rel("sync_runs")
        self.locks, self.plans, self.progress = rel("sync_locks"), rel("sync_plans"), rel("sync_progress")
        self.targets = rel("sync_targets")
        self.host = socket.gethostname()
        self.pid = os.getpid()

    # -- schema ------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.wh.schema_exists(self.schema) and self.wh.table_exists(self.schema, "schema_version")

    def version(self) -> int:
        return int(self.wh.scalar(f"select coalesce(max(version), 0) from {self.version_table}") or 0)

    def migrate(self) -> int:
        """Create or upgrade the state schema; return its version."""
        wh = self.wh
        if not wh.schema_exists(self.schema):
            try:
                wh.create_schema(self.schema)
            except Exception:
                if not wh.schema_exists(self.schema):   # another process created it at the same time
                    raise
        try:
            wh.execute(f"create table if not exists {self.version_table} (version integer not null, "
                       f"applied_at {wh.timestamp_type}, tool_version {wh.text_type})")
        except Exception:
            # Two runs starting on a new schema at once: PostgreSQL's `if not exists` is no guard against
            # a concurrent create (a duplicate pg_type row); the other run's table is as good.
            if not wh.table_exists(self.schema, "schema_version"):
                raise
        current = self.version()
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"the state schema {self.schema} is at version {current}, newer than this dbt-emarsys-sync "
                f"understands ({SCHEMA_VERSION}); upgrade dbt-emarsys-sync")
        if current == SCHEMA_VERSION:
            return current
        from .. import __version__

        with wh.transaction():
            if wh.dialect.lock_table_sql:
                wh.run(wh.dialect.lock_table_sql.format(table=self.version_table))
            current = int(wh.run(f"select coalesce(max(version), 0) from {self.version_table}").fetchone()[0])
            for version, statements in _migrations(self):
                if version <= current:
                    continue
                log.info("state schema %s: applying migration %d", self.schema, version)
                for sql in statements:
                    wh.run(sql)
                wh.run(f"insert into {self.version_table} (version, applied_at, tool_version) values "
                       f"({version}, {literal(now_utc())}, {literal(__version__)})")
        return SCHEMA_VERSION

    def plan_table(self, sync_name: str) -> str:
        return self.wh.relation(self.schema, f"plan_{slug(sync_name)}")

    def members_table(self, sync_name: str) -> str:
        return self.wh.relation(self.schema, f"members_{slug(sync_name)}")

    # -- locks -------------------------------------------------------------------------------

    def lock_holder(self, sync_name: str) -> LockInfo | None:
        row = self.wh.fetch_one(
            f"select sync_name, run_id, host, pid, acquired_at, heartbeat_at, process_started "
            f"from {self.locks} where sync_name = {literal(sync_name)}")
        if row is None:
            return None
        return LockInfo(row[0], row[1], row[2] or "?", int(row[3] or 0), row[4], row[5], row[6])

    def acquire_lock(self, sync_name: str, run_id: str, timeout: float, stale_after: float,
                     sleep: Callable[[float], None] = time.sleep) -> None:
        """Hold the sync's lock, waiting up to `timeout` seconds for another run to finish.

        A lock whose holder is gone (a process on this host that no longer exists, or a heartbeat older
        than `stale_after` seconds) is taken over.
        """
        started = time.monotonic()
        me = literal(sync_name)
        while True:
            stamp = literal(now_utc())
            with self._process_lock:
                try:
                    self.wh.execute(
                        f"insert into {self.locks} (sync_name, run_id, host, pid, process_started, acquired_at, "
                        f"heartbeat_at) select {me}, {literal(run_id)}, {literal(self.host)}, {self.pid}, "
                        f"{literal(_process_start(self.pid))}, {stamp}, {stamp} where not exists "
                        f"(select 1 from {self.locks} where sync_name = {me})")
                except Exception as exc:  # a concurrent insert lost the race on the unique index
                    log.debug("lock insert for %s raced: %s", sync_name, exc)
                holder = self.lock_holder(sync_name)
                if holder is not None and holder.run_id == run_id:
                    return
                if holder is not None and self._is_stale(holder, stale_after):
                    log.warning("sync %s: taking over the lock left by %s", sync_name, holder.describe())
                    self.wh.execute(
                        f"update {self.locks} set run_id = {literal(run_id)}, host = {literal(self.host)}, "
                        f"pid = {self.pid}, process_started = {literal(_process_start(self.pid))}, "
                        f"acquired_at = {stamp}, heartbeat_at = {stamp} "
                        f"where sync_name = {me} and run_id = {literal(holder.run_id)}")
                    continue
            waited = time.monotonic() - started
            if waited >= timeout:
                who = holder.describe() if holder else "another run"
                raise LockTimeout(f"sync {sync_name} is being run by {who}; waited {waited:.0f}s "
                                  f"(--lock-timeout {timeout:g})")
            sleep(min(wait_pause(waited), max(timeout - waited, 0.01)))

    def _is_stale(self, holder: LockInfo, stale_after: float) -> bool:
        if holder.host == self.host and holder.pid:
            if holder.pid == self.pid:
                return False   # this process: another thread's run of the same sync, alive
            if not _process_alive(holder.pid):
                return True
            # The pid is alive: the holder, unless the pid was reused by a later process.
            started = _process_start(holder.pid)
            return bool(holder.process_started and started and started != holder.process_started)
        age = (now_utc() - holder.heartbeat_at).total_seconds() if holder.heartbeat_at else float("inf")
        return age > stale_after

    def heartbeat(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        ids = ", ".join(literal(r) for r in run_ids)
        with self._process_lock:
            self.wh.execute(f"update {self.locks} set heartbeat_at = {literal(now_utc())} "
                            f"where run_id in ({ids})")

    def release_lock(self, sync_name: str, run_id: str) -> None:
        with self._process_lock:
            self.wh.execute(f"delete from {self.locks} where sync_name = {literal(sync_name)} "
                            f"and run_id = {literal(run_id)}")

    # -- the diff ----------------------------------------------------------------------------

    def _key_expr(self, shape: SyncShape) -> str:
        value = f"trim({self.wh.macro('cast', field=self.wh.quote(shape.key_column), type=self.wh.text_type)})"
        if shape.lower_key:
            value = f"lower({value})"
        return f"nullif({value}, '')"

    @staticmethod
    def _key_shape_check(shape: SyncShape, key: str) -> str:
        """Email keys that can never be an address, told apart in SQL (portable LIKE patterns), so that
        an invalid key is reported as such rather than as a duplicate. Deliberately looser than the
        mapper's check, which still looks at every key it sends."""
        if not shape.email_key:
            return ""
        return f"or {key} not like '_%@_%._%' or {key} like '%@%@%' or {key} like '% %'"

    def _text_of(self, shape: SyncShape, column: str) -> str:
        col = self.wh.quote(column)
        if column in shape.utc_columns:
            # Text of a tz-aware timestamp depends on the session's time zone: pin it to UTC so that
            # a laptop and a CI job hash the same value the same way.
            col = f"({col} at time zone 'UTC')"
        return self.wh.macro("cast", field=col, type=self.wh.text_type)

    def hash_expr(self, shape: SyncShape) -> str:
        """md5 (dbt's `hash`) of the mapping fingerprint and every mapped value as text, first 16 hex digits.

        Each value is followed by a unit separator (chr 31) and a null is a record separator (chr 30),
        so a null, an empty string and a value that moved between columns all hash differently (only
        values that themselves hold those control characters could be framed ambiguously). Cheaper
        than length-prefixing each value, which costs a third more on a million rows."""
        parts = [literal(shape.fingerprint)]
        for column in shape.hash_columns:
            framed = self.wh.macro("concat", fields=[self._text_of(shape, column), "chr(31)"])
            parts.append(f"coalesce({framed}, chr(30))")
        # 64 bits of the digest: a changed row goes unnoticed only if its new hash equals its old one
        # (2^-64), and the snapshot's join table is a quarter smaller than with all 128.
        return f"substr({self.wh.macro('hash', field=self.wh.macro('concat', fields=parts))}, 1, 16)"

    def _snapshot_source(self, sync_name: str, exists: bool) -> str:
        if exists:
            return (f"select sync_key, row_hash from {self.snapshot} "
                    f"where sync_name = {literal(sync_name)}")
        t = self.wh.text_type
        return f"select cast(null as {t}) as sync_key, cast(null as {t}) as row_hash where 1 = 0"

    def diff_sql(self, shape: SyncShape, *, full_refresh: bool, state_exists: bool = True,
                 members_table: str | None = None) -> str:
        """The plan as one SELECT: rejected rows, rows to send, departed keys, numbered in that order.

        Shaped for one pass over a large model with little memory: the model's rows (key, hash, mapped
        values) stream into one full outer join with the snapshot (its hash table holds only keys and
        hashes), and duplicate keys come from a second, key-only scan grouped by key. Referencing the
        row CTE twice would make the warehouse materialise every row with its values.
        """
        t, b = self.wh.text_type, self.wh.bigint_type
        utc = shape.utc_columns
        cols = [f"({self.wh.quote(c)} at time zone 'UTC') as c{i}" if c in utc
                else f"{self.wh.quote(c)} as c{i}" for i, c in enumerate(shape.read_columns)]
        cnames = [f"c{i}" for i in range(len(shape.read_columns))]
        key = self._key_expr(shape)
        changed = "1 = 1" if full_refresh else "j.snap_hash is null or j.snap_hash <> j.row_hash"
        invalid = f"j.sync_key is null {self._key_shape_check(shape, 'j.sync_key')}"
        departed = FORGET if members_table is not None else shape.departed_action
        # A mirror's full refresh removes what the list really holds (read from Emarsys into
        # members_table); keys only the snapshot knew are forgotten.
        members_removal = ""
        # known: the state holds the key; for a full refresh of a mirror, which reconciles with what
        # Emarsys really holds, the list has it (whatever the state says).
        known = "case when j.snap_key is null then 0 else 1 end"
        if members_table is not None:
            known = (f"case when exists (select 1 from {members_table} m where m.sync_key = j.sync_key) "
                     f"then 1 else 0 end")
        if members_table is not None:
            members_removal = f"""
    union all
    select {PHASES[REMOVE]} as phase, '{REMOVE}' as action, cast(null as {t}) as reason_code,
           cast(1 as {b}) as key_rows, 1 as known, m.sync_key, m.member_id, cast(null as {t}) as row_hash,
           {", ".join(f"null as {c}" for c in cnames)}
    from {members_table} m
    where m.sync_key is null or not exists (select 1 from keys_ k where k.sync_key = m.sync_key)"""
        return f"""
with src as (
    select {key} as sync_key, {self.hash_expr(shape)} as row_hash, {", ".join(cols)}
    from {shape.model_relation}
),
keys_ as (
    select {key} as sync_key, count(*) as key_rows from {shape.model_relation} group by {key}
),
snap as ({self._snapshot_source(shape.name, state_exists)}),
j as (
    select r.*, s.sync_key as snap_key, s.row_hash as snap_hash
    from src r full outer join snap s on s.sync_key = r.sync_key
),
rows_ as (
    select case when j.sync_key is null and j.snap_key is not null then {PHASES[departed]}
                when {invalid} or d.key_rows > 1 then {PHASES[REJECT]}
                else {PHASES[UPSERT]} end as phase,
           case when j.sync_key is null and j.snap_key is not null then '{departed}'
                when {invalid} or d.key_rows > 1 then '{REJECT}'
                else '{UPSERT}' end as action,
           case when j.sync_key is null and j.snap_key is not null then cast(null as {t})
                when {invalid} then 'invalid_key'
                when d.key_rows > 1 then 'duplicate_key' end as reason_code,
           cast(coalesce(d.key_rows, 1) as {b}) as key_rows,
           {known} as known,
           coalesce(j.sync_key, j.snap_key) as sync_key, cast(null as {b}) as member_id,
           coalesce(j.row_hash, j.snap_hash) as row_hash, {", ".join("j." + c for c in cnames)}
    from j left join keys_ d on d.sync_key = j.sync_key and d.key_rows > 1
    where j.sync_key is null or {invalid} or d.key_rows > 1 or {changed}{members_removal}
)
select cast(phase as {b}) * {PHASE_STRIDE} + cast(row_number() over (partition by phase) as {b}) as seq,
       action, reason_code, key_rows, known, sync_key, member_id, row_hash, {", ".join(cnames)}
from rows_"""

    def create_plan(self, shape: SyncShape, run_id: str, *, full_refresh: bool = False, temporary: bool = False,
                    members_table: str | None = None) -> PlanSummary:
        """Materialise the run's plan. `temporary` (dry runs) writes nothing to the state schema."""
        wh = self.wh
        state_exists = not temporary or self.exists()
        if temporary:
            table = wh.quote(f"emarsys_dry_plan_{slug(shape.name)}")
            diff = self.diff_sql(shape, full_refresh=full_refresh, state_exists=state_exists,
                                 members_table=members_table)
            wh.execute(f"drop table if exists {table}", f"create temporary table {table} as {diff}")
        else:
            table = self.plan_table(shape.name)
            stamp = literal(now_utc())
            with wh.transaction():
                wh.run(f"drop table if exists {table}")
                wh.run(f"create table {table} as "
                       f"{self.diff_sql(shape, full_refresh=full_refresh, members_table=members_table)}")
                if wh.dialect.indexes:
                    wh.run(f"create index on {table} (seq)")
                wh.run(f"insert into {self.plans} (sync_name, run_id, plan_table, full_refresh, created_at) "
                       f"values ({literal(shape.name)}, {literal(run_id)}, {literal(table)}, "
                       f"{int(full_refresh)}, {stamp})")
                # Rows SQL rejected are recorded with the plan: they need no acknowledgement.
                duplicate_message = wh.macro("concat", fields=[
                    "'the key appears '", wh.macro("cast", field="key_rows", type=wh.text_type),
                    "' times in the model; every row of it is rejected'"])
                wh.run(
                    f"insert into {self.rejected} (sync_name, sync_key, code, message, run_id, plan_seq, "
                    f"rejected_at) select {literal(shape.name)}, sync_key, reason_code, "
                    f"case when reason_code = 'duplicate_key' then {duplicate_message} "
                    f"when sync_key is null then {literal(f'the key column {shape.key_column!r} is null or empty')} "
                    f"else {wh.macro('concat', fields=[literal(chr(39)), 'sync_key', literal(chr(39) + ' is not a valid email address')])} end, "
                    f"{literal(run_id)}, seq, {stamp} from {table} where action = '{REJECT}'")
            if wh.dialect.analyze:
                wh.execute(f"analyze {table}")
        return self._summarise(shape, run_id, table, full_refresh, state_exists)

    def _summarise(self, shape: SyncShape, run_id: str, table: str, full_refresh: bool,
                   state_exists: bool) -> PlanSummary:
        wh = self.wh
        summary = PlanSummary(run_id, table, full_refresh=full_refresh)
        summary.model_rows = int(wh.scalar(f"select count(*) from {shape.model_relation}") or 0)
        rows = wh.fetch(f"select action, known, reason_code, count(*), min(seq), max(seq) from {table} "
                        f"group by action, known, reason_code")
        ranges: dict[str, list[int]] = {}
        for action, known, reason, count, lo, hi in rows:
            count = int(count)
            r = ranges.setdefault(action, [int(lo), int(hi)])
            r[0], r[1] = min(r[0], int(lo)), max(r[1], int(hi))
            if action == UPSERT:
                if known:
                    summary.changed += count
                else:
                    summary.new += count
            elif action == REMOVE:
                summary.removals += count
            elif action == FORGET:
                summary.forgotten += count
            elif action == REJECT:
                summary.sql_rejected += count
                summary.sql_rejected_by_code[reason] = summary.sql_rejected_by_code.get(reason, 0) + count
        summary.upsert_range = tuple(ranges.get(UPSERT, (1, 0)))  # type: ignore[assignment]
        summary.remove_range = tuple(ranges.get(REMOVE, (1, 0)))  # type: ignore[assignment]
        if state_exists:
            summary.snapshot_rows = int(wh.scalar(
                f"select count(*) from {self.snapshot} where sync_name = {literal(shape.name)}") or 0)
        return summary

    def sql_rejections(self, table: str, limit: int) -> list[tuple[str | None, str, int]]:
        return [(r[0], r[1], int(r[2])) for r in self.wh.fetch(
            f"select sync_key, reason_code, key_rows from {table} where action = '{REJECT}' "
            f"order by seq limit {int(limit)}")]

    def read_plan(self, table: str, lo: int, hi: int, page: int = 10_000,
                  columns: int | None = None) -> Iterator[list[PlanRow]]:
        """Plan rows lo..hi in seq order, a page at a time (keyset paging: no cursor stays open, so
        checkpoints can be written on the same connection between pages, on every adapter).
        `columns`: how many of the read columns to fetch (all when None; 0 for removals, which need
        only keys). Fetching only what the rows need is most of this loop's cost."""
        start = lo
        make = tuple.__new__
        while start <= hi:
            end = min(start + page - 1, hi)
            if columns is not None:
                # known is 0/1; seq and member_id are bigints, which some drivers return as Decimal.
                # tuple.__new__ skips the NamedTuple's argument handling, per row.
                yield [make(PlanRow, (r[0] if type(r[0]) is int else int(r[0]), r[1], r[2] == 1,
                                      r[3] if r[3] is None or type(r[3]) is int else int(r[3]), r[4:]))
                       for r in self._plan_page(table, start, end, columns)]
            else:
                rows = self.wh.fetch(f"select * from {table} where seq between {start} and {end} order by seq")
                yield [PlanRow(int(r[0]), r[5], bool(r[4]), None if r[6] is None else int(r[6]), tuple(r[8:]))
                       for r in rows]
            start = end + 1

    def read_plan_raw(self, table: str, lo: int, hi: int, page: int, columns: int, *,
                      unused: frozenset[int] = frozenset(), decimals_as_text: frozenset[int] = frozenset(),
                      ) -> Iterator[list[tuple]]:
        """read_plan's rows as the driver returns them, for a sync's hot loop: (seq, key, known,
        member_id, then the first `columns` read columns from index PLAN_VALUES_AT). seq and member_id
        may be Decimal and known is 0/1; building no PlanRow saves a tuple or two per row.

        Columns in `unused` are read as null (the key column, when no field maps it, is in the key
        already); decimal columns in `decimals_as_text` come as their plain text where the warehouse
        casts decimals to plain text (Dialect.plain_decimal_text)."""
        as_text = decimals_as_text if self.wh.dialect.plain_decimal_text else frozenset()
        values = ["null" if i in unused else f"cast(c{i} as {self.wh.text_type})" if i in as_text else f"c{i}"
                  for i in range(columns)]
        select = ", ".join(["seq", "sync_key", "known", "member_id", *values])
        start = lo
        while start <= hi:
            end = min(start + page - 1, hi)
            yield self.wh.fetch(f"select {select} from {table} where seq between {start} and {end} order by seq")
            start = end + 1

    def _plan_page(self, table: str, start: int, end: int, columns: int) -> list[tuple]:
        return self.wh.fetch(f"select seq, sync_key, known, member_id{', ' if columns else ''}"
                             f"{', '.join(f'c{i}' for i in range(columns))} from {table} "
                             f"where seq between {start} and {end} order by seq")

    def drop_temporary_plan(self, table: str) -> None:
        self.wh.execute(f"drop table if exists {table}")

    # -- checkpoints and the fold -------------------------------------------------------------

    def checkpoint(self, sync_name: str, run_id: str, ranges: Sequence[tuple[int, int]],
                   rejections: Sequence[tuple[int, str | None, str, str]]) -> None:
        """Record acknowledged seq ranges and the rows rejected in them (seq, key, code, message), in
        one transaction: after this returns, a crash loses none of it."""
        stamp = now_utc()
        with self.wh.transaction():
            if ranges:
                self.wh.insert_values(self.progress, ("sync_name", "run_id", "seq_lo", "seq_hi", "acked_at"),
                                      [(sync_name, run_id, lo, hi, stamp) for lo, hi in ranges])
            if rejections:
                self.wh.insert_values(
                    self.rejected, ("sync_name", "sync_key", "code", "message", "run_id", "plan_seq",
                                    "rejected_at"),
                    [(sync_name, key, str(code), str(message)[:1000], run_id, seq, stamp)
                     for seq, key, code, message in rejections])

    def _acked_spans_sql(self, me: str, run: str) -> str:
        """A `spans` CTE: the run's acknowledged seq ranges merged where they touch or overlap. A run
        checkpoints a range per request; matching a million plan rows against one span instead of a
        thousand ranges takes a third of the time (DuckDB, measured)."""
        return (f"ranges as (select seq_lo, seq_hi, max(seq_hi) over (order by seq_lo, seq_hi rows between "
                f"unbounded preceding and 1 preceding) as reach from {self.progress} "
                f"where sync_name = {me} and run_id = {run}), "
                f"starts as (select seq_lo, seq_hi, sum(case when reach is null or seq_lo > reach + 1 then 1 "
                f"else 0 end) over (order by seq_lo, seq_hi rows unbounded preceding) as span from ranges), "
                f"spans as (select min(seq_lo) as seq_lo, max(seq_hi) as seq_hi from starts group by span)")

    def fold(self, sync_name: str, run_id: str, table: str, *, completed: bool) -> tuple[int, int]:
        """Fold a plan's acknowledged rows into the snapshot, set-based, and drop the plan.

        Returns (upserts folded, removals folded). `completed`: every row of the plan was tried, so
        rejections recorded by earlier runs are superseded by this run's.
        """
        wh = self.wh
        me, run = literal(sync_name), literal(run_id)
        acked = wh.relation(self.schema, f"acked_{slug(sync_name)}")
        with wh.transaction():
            wh.run(f"drop table if exists {acked}")
            wh.run(
                f"create table {acked} as with {self._acked_spans_sql(me, run)} "
                f"select p.seq, p.action, p.sync_key, p.row_hash from {table} p "
                f"where p.action in ('{UPSERT}', '{REMOVE}') and exists (select 1 from spans g "
                f"where p.seq between g.seq_lo and g.seq_hi) "
                f"and not exists (select 1 from {self.rejected} x where x.sync_name = {me} "
                f"and x.run_id = {run} and x.plan_seq = p.seq)")
            counts = dict(wh.run(f"select action, count(*) from {acked} group by action").fetchall())
            wh.run(f"delete from {self.snapshot} where sync_name = {me} and sync_key in ("
                   f"select sync_key from {acked} union all "
                   f"select sync_key from {table} where action = '{FORGET}')")
            wh.run(f"insert into {self.snapshot} (sync_name, sync_key, row_hash, run_id, synced_at) "
                   f"select {me}, sync_key, row_hash, {run}, {literal(now_utc())} from {acked} "
                   f"where action = '{UPSERT}'")
            # Acknowledged now: no longer rejected. Rejected again in this run: the older record goes.
            wh.run(f"delete from {self.rejected} where sync_name = {me} and sync_key in "
                   f"(select sync_key from {acked})")
            if completed:
                wh.run(f"delete from {self.rejected} where sync_name = {me} and run_id <> {run}")
            else:
                wh.run(f"delete from {self.rejected} where sync_name = {me} and run_id <> {run} and sync_key in "
                       f"(select sync_key from {self.rejected} where sync_name = {me} and run_id = {run})")
            wh.run(f"delete from {self.progress} where sync_name = {me} and run_id = {run}")
            wh.run(f"delete from {self.plans} where sync_name = {me} and run_id = {run}")
            wh.run(f"drop table if exists {acked}")
            wh.run(f"drop table if exists {table}")
        return int(counts.get(UPSERT, 0)), int(counts.get(REMOVE, 0))

    def pending_plans(self, sync_name: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.wh.fetch(
            f"select run_id, plan_table from {self.plans} where sync_name = {literal(sync_name)} "
            f"order by created_at")]

    def recover(self, sync_name: str) -> list[Recovery]:
        """Fold what a crashed run had acknowledged, and mark that run interrupted."""
        recovered = []
        for run_id, table in self.pending_plans(sync_name):
            upserts, removals = self.fold(sync_name, run_id, table, completed=False)
            self.wh.execute(
                f"update {self.runs} set status = 'interrupted', finished_at = {literal(now_utc())}, "
                f"message = 'the run stopped before it finished; its acknowledged rows were kept by run "
                f"that recovered it' where run_id = {literal(run_id)} and sync_name = {literal(sync_name)} "
                f"and status = 'running'")
            recovered.append(Recovery(run_id, upserts, removals))
        return recovered

    def drop_plan(self, sync_name: str, run_id: str, table: str) -> None:
        """Abandon a plan nothing was sent from (a refused or failed-before-sending run)."""
        me, run = literal(sync_name), literal(run_id)
        self.wh.execute(f"delete from {self.rejected} where sync_name = {me} and run_id = {run}",
                        f"delete from {self.plans} where sync_name = {me} and run_id = {run}",
                        f"drop table if exists {table}")

    # -- a full refresh of a list: its real members --------------------------------------------

    def create_members_table(self, sync_name: str, temporary: bool = False) -> str:
        table = self.wh.quote(f"emarsys_dry_members_{slug(sync_name)}") if temporary else \
            self.members_table(sync_name)
        kind = "temporary table" if temporary else "table"
        self.wh.execute(f"drop table if exists {table}",
                        f"create {kind} {table} (member_id {self.wh.bigint_type}, email {self.wh.text_type}, "
                        f"sync_key {self.wh.text_type})")
        return table

    def add_members(self, table: str, members: Sequence[tuple[int, str | None]], lower: bool) -> None:
        rows = []
        for member_id, email in members:
            key = email.strip() if isinstance(email, str) else None
            key = (key.lower() if lower else key) if key else None
            rows.append((member_id, email, key))
        with self.wh.transaction():
            self.wh.insert_values(table, ("member_id", "email", "sync_key"), rows)

    def drop_table(self, table: str) -> None:
        self.wh.execute(f"drop table if exists {table}")

    # -- history -------------------------------------------------------------------------------

    def record_run_start(self, run_id: str, sync_name: str, model: str, obj: str, behaviour: str,
                         full_refresh: bool) -> None:
        # Called with the sync's lock held, so no other run of it is alive: one still recorded as
        # running was killed before it recorded its end (and, without a plan, `recover` won't see it).
        self.wh.execute(
            f"update {self.runs} set status = 'interrupted', finished_at = {literal(now_utc())}, "
            f"message = 'the run stopped before it finished; the next run kept what it had acknowledged' "
            f"where sync_name = {literal(sync_name)} and status = 'running'",
            f"insert into {self.runs} (run_id, sync_name, model, object, behaviour, status, full_refresh, "
            f"started_at, host, pid) values ({literal(run_id)}, {literal(sync_name)}, {literal(model)}, "
            f"{literal(obj)}, {literal(behaviour)}, 'running', {int(full_refresh)}, {literal(now_utc())}, "
            f"{literal(self.host)}, {self.pid})")

    def record_run_end(self, run_id: str, sync_name: str, status: str, message: str, counts: dict) -> None:
        sets = ", ".join(f"{k} = {literal(v)}" for k, v in counts.items())
        self.wh.execute(
            f"update {self.runs} set status = {literal(status)}, message = {literal(message[:2000])}, "
            f"finished_at = {literal(now_utc())}{', ' + sets if sets else ''} "
            f"where run_id = {literal(run_id)} and sync_name = {literal(sync_name)}")

    # -- inspection and reset -----------------------------------------------------------------

    def known_syncs(self) -> list[str]:
        names: set[str] = set()
        for table in (self.snapshot, self.rejected, self.runs, self.locks, self.plans):
            names.update(r[0] for r in self.wh.fetch(f"select distinct sync_name from {table}"))
        return sorted(names)

    def describe(self, sync_name: str, samples: int = 5) -> dict:
        me = literal(sync_name)
        wh = self.wh
        last = wh.fetch_one(f"select max(synced_at) from {self.snapshot} where sync_name = {me}")
        by_code = {r[0]: int(r[1]) for r in wh.fetch(
            f"select code, count(*) from {self.rejected} where sync_name = {me} group by code order by code")}
        rejected_samples = [{"key": r[0], "code": r[1], "message": r[2], "run_id": r[3], "rows": int(r[4])}
                            for r in wh.fetch(
            f"select sync_key, code, message, max(run_id), count(*) from {self.rejected} where sync_name = {me} "
            f"group by sync_key, code, message order by max(rejected_at) desc, sync_key limit {int(samples)}")]
        runs = [dict(zip(("run_id", "status", "started_at", "finished_at", "acknowledged", "removed", "rejected",
                          "message"), r)) for r in wh.fetch(
            f"select run_id, status, started_at, finished_at, acknowledged, removed, rejected, message "
            f"from {self.runs} where sync_name = {me} order by started_at desc limit 5")]
        holder = self.lock_holder(sync_name)
        target = wh.fetch_one(f"select emarsys, api_user, bound_at from {self.targets} where sync_name = {me}") \
            if self._has_targets() else None
        return {
            "sync": sync_name,
            "state_schema": self.schema,
            "emarsys": None if target is None else {"api": target[0], "api_user": target[1], "since": target[2]},
            "snapshot_rows": int(wh.scalar(f"select count(*) from {self.snapshot} where sync_name = {me}") or 0),
            "last_acknowledged_at": last[0] if last else None,
            "rejected_rows": sum(by_code.values()),
            "rejected_by_code": by_code,
            "rejected_samples": rejected_samples,
            "pending_plans": [run for run, _ in self.pending_plans(sync_name)],
            "lock": None if holder is None else {"run_id": holder.run_id, "host": holder.host, "pid": holder.pid,
                                                 "acquired_at": holder.acquired_at,
                                                 "heartbeat_at": holder.heartbeat_at},
            "recent_runs": runs,
        }

    # -- the Emarsys a snapshot belongs to ------------------------------------------------------

    def _has_targets(self) -> bool:
        """sync_targets came with migration 2; `plan` and `state` don't migrate an older schema."""
        return self.version() >= 2

    def bound_targets(self) -> dict[str, tuple[str, str | None]]:
        """sync name -> (Emarsys, API user) its snapshot was acknowledged by, for syncs that hold
        acknowledged or rejected rows (a sync with nothing recorded can go anywhere)."""
        if not self.exists() or not self._has_targets():
            return {}
        # One probe per sync (a handful), each stopping at the first row: a semi-join of the targets
        # with a snapshot of millions of rows would hash the whole snapshot (past DuckDB's memory cap
        # at 5,000,000 rows).
        bound = {}
        for name, emarsys, api_user in self.wh.fetch(f"select sync_name, emarsys, api_user from {self.targets}"):
            me = literal(name)
            if self.wh.fetch(f"select 1 from {self.snapshot} where sync_name = {me} limit 1") or \
                    self.wh.fetch(f"select 1 from {self.rejected} where sync_name = {me} limit 1"):
                bound[name] = (emarsys, api_user)
        return bound

    def bind_target(self, sync_name: str, emarsys: str, api_user: str | None, *, forget: bool = False) -> None:
        """Record the Emarsys this run writes to. `forget`: another Emarsys than the snapshot's, with
        --full-refresh: the old snapshot and rejections go first, so that an interrupted refresh
        leaves only what the new Emarsys acknowledged."""
        me = literal(sync_name)
        current = self.wh.fetch_one(f"select emarsys, api_user from {self.targets} where sync_name = {me}")
        if current == (emarsys, api_user) and not forget:
            return
        with self.wh.transaction():
            if forget:
                self.wh.run(f"delete from {self.snapshot} where sync_name = {me}")
                self.wh.run(f"delete from {self.rejected} where sync_name = {me}")
            self.wh.run(f"delete from {self.targets} where sync_name = {me}")
            self.wh.run(f"insert into {self.targets} (sync_name, emarsys, api_user, bound_at) values "
                        f"({me}, {literal(emarsys)}, {literal(api_user)}, {literal(now_utc())})")

    def reset(self, sync_name: str) -> dict:
        """Forget what was acknowledged and rejected for a sync (its history stays)."""
        me = literal(sync_name)
        wh = self.wh
        counts = {
            "snapshot_rows": int(wh.scalar(f"select count(*) from {self.snapshot} where sync_name = {me}") or 0),
            "rejected_rows": int(wh.scalar(f"select count(*) from {self.rejected} where sync_name = {me}") or 0),
        }
        plans = self.pending_plans(sync_name)
        has_targets = self._has_targets()
        with wh.transaction():
            wh.run(f"delete from {self.snapshot} where sync_name = {me}")
            wh.run(f"delete from {self.rejected} where sync_name = {me}")
            wh.run(f"delete from {self.progress} where sync_name = {me}")
            wh.run(f"delete from {self.plans} where sync_name = {me}")
            if has_targets:
                wh.run(f"delete from {self.targets} where sync_name = {me}")
            for _, table in plans:
                wh.run(f"drop table if exists {table}")
        return counts


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), to tell a reused pid from the holder."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
