"""The background worker: deliveries are acknowledged at once and synced here, one at a time.

dbt Cloud gives a webhook 10 seconds to answer and a sync takes longer, so the HTTP handler only puts
the delivery on a queue. One worker thread takes deliveries off it in order, so at most one sync of the
project runs at a time (the service serves one dbt project). It also owns every warehouse call (the
delivery ledger as well as the sync): dbt's adapters are process-wide, and keeping them on one thread
keeps them out of each other's way.

Each run id is synced once. The handler drops a run id this process has already accepted (dbt Cloud
retries deliveries); the ledger in the state schema remembers run ids across restarts, so the worker
skips a run an earlier process already handled. A delivery is written to the ledger as soon as the
worker is free to take it off the queue; one that arrives while a sync runs waits in memory until that
sync ends. On start, runs the ledger shows as queued or interrupted are synced again (the sync state
makes that safe), at most `max_attempts` times.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Protocol

from .logs import RunLogContext

log = logging.getLogger(__name__)

ACCEPTED, DUPLICATE, BUSY, STOPPED = "accepted", "duplicate", "busy", "stopped"
# Final statuses of a delivery (also the ledger's `status` column).
SUCCESS, REJECTED_ROWS, FAILED, NOT_SYNCED, ERROR, ABANDONED = (
    "success", "rejected_rows", "failed", "not_synced", "error", "abandoned")
QUEUED, RUNNING = "queued", "running"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Delivery:
    run_id: int
    job_id: int | None = None
    environment_id: int | None = None
    event_id: str = ""
    received_at: str = field(default_factory=_now)
    attempts: int = 0              # attempts an earlier process made (resumed deliveries)
    resumed: bool = False


@dataclass(frozen=True)
class Outcome:
    status: str                   # one of the final statuses above
    message: str = ""


class DeliveryLedger(Protocol):
    """Run ids the service has taken on, kept in the state schema."""

    def open(self) -> None: ...

    def unfinished(self) -> list[Delivery]: ...

    def claim(self, delivery: Delivery) -> bool: ...

    def started(self, run_id: int) -> int: ...

    def finished(self, run_id: int, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


@dataclass
class Processed:
    run_id: int
    status: str
    message: str
    finished_at: str


class SyncWorker:
    def __init__(self, execute: Callable[[Delivery], Outcome], ledger: DeliveryLedger,
                 context: RunLogContext, *, queue_size: int = 100, max_attempts: int = 3,
                 ledger_retry_seconds: float = 30.0):
        self._execute = execute
        self._ledger = ledger
        self._context = context
        self._queue: queue.Queue[Delivery | None] = queue.Queue(maxsize=queue_size)
        self._max_attempts = max_attempts
        self._ledger_retry_seconds = ledger_retry_seconds
        self._lock = threading.Condition()
        self._accepted: set[int] = set()       # run ids this process has taken (the handler's check)
        self._pending: list[Delivery] = []     # taken off the queue and recorded, not yet run
        self._outstanding = 0                  # taken on and not finished, wherever they are
        self._running: Delivery | None = None
        self._ledger_open = False
        self._last_ledger_error = ""
        self._stopping = False
        # The latest outcomes, for tests and inspection; the ledger keeps the full history.
        self.processed: deque[Processed] = deque(maxlen=1000)
        self._processed_count = 0
        self._thread = threading.Thread(target=self._loop, name="dbt-cloud-sync-worker", daemon=True)

    # -- the handler's side -------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> str:
        """Queue a delivery; never blocks. ACCEPTED, DUPLICATE, BUSY (queue full) or STOPPED."""
        with self._lock:
            if self._stopping:
                return STOPPED
            if delivery.run_id in self._accepted:
                return DUPLICATE
            try:
                self._queue.put_nowait(delivery)
            except queue.Full:
                return BUSY
            self._accepted.add(delivery.run_id)
            self._outstanding += 1
            self._lock.notify_all()
            return ACCEPTED

    def status(self) -> dict:
        with self._lock:
            return {
                "worker_alive": self._thread.is_alive(),
                "running_run_id": self._running.run_id if self._running else None,
                "queued": self._outstanding - (1 if self._running else 0),
                "processed": self._processed_count,
                "ledger": "ok" if self._ledger_open else ("error" if self._last_ledger_error else "opening"),
            }

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "SyncWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking deliveries; give the running sync `timeout` seconds. A sync still running is
        left as `running` in the ledger and synced again at the next start."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        with self._lock:
            waiting = [d.run_id for d in self._pending]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    waiting.append(item.run_id)
        if self._thread.is_alive() and self._running is not None:
            log.warning("stopping while run %s is still syncing; it will be synced again at the next "
                        "start", self._running.run_id)
        if waiting:
            log.warning("stopping with %d deliveries not synced yet (run ids %s); those recorded in the "
                        "state schema are synced at the next start, the others can be synced with "
                        "`dbt-emarsys-sync run --dbt-cloud-run-id N`", len(waiting),
                        ", ".join(map(str, waiting)))
        if not self._thread.is_alive():
            self._ledger.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running (for tests and a graceful drain)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._outstanding:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
            return True

    # -- the worker thread --------------------------------------------------------------------

    def _loop(self) -> None:
        self._open_ledger()
        while True:
            with self._lock:
                if self._stopping:
                    return
            self._record_arrivals(block=not self._pending)
            with self._lock:
                if self._stopping:
                    return
                if not self._pending:
                    continue
                delivery = self._pending.pop(0)
                self._running = delivery
            try:
                self._run_one(delivery)
            finally:
                with self._lock:
                    self._running = None
                    self._lock.notify_all()

    def _open_ledger(self) -> None:
        """Open the ledger and resume what an earlier process left unfinished. Retried before each
        delivery while the warehouse is unreachable."""
        if self._ledger_open:
            return
        try:
            self._ledger.open()
            unfinished = self._ledger.unfinished()
        except Exception as exc:  # the warehouse's own errors vary by adapter
            self._last_ledger_error = _one_line(exc)
            log.error("the delivery ledger in the state schema is unreachable: %s", self._last_ledger_error)
            return
        self._ledger_open = True
        self._last_ledger_error = ""
        for delivery in unfinished:
            with self._lock:
                self._outstanding += 1
            with self._context.run(delivery.run_id):
                if delivery.attempts >= self._max_attempts:
                    log.error("run %s was interrupted %d times; not trying it again", delivery.run_id,
                              delivery.attempts)
                    self._finish(delivery, Outcome(ABANDONED, f"interrupted {delivery.attempts} times"))
                    continue
                log.info("resuming run %s, left unfinished by an earlier process", delivery.run_id)
            with self._lock:
                self._accepted.add(delivery.run_id)
                self._pending.append(delivery)

    def _record_arrivals(self, block: bool) -> None:
        """Take what has arrived off the queue and record it in the ledger before the next sync starts."""
        arrivals: list[Delivery] = []
        try:
            # Blocking wakes up now and then, to retry the ledger while the warehouse is unreachable.
            item = self._queue.get(timeout=self._ledger_retry_seconds) if block else self._queue.get_nowait()
            while item is not None:
                arrivals.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if not self._ledger_open:
            self._open_ledger()
        for delivery in arrivals:
            with self._context.run(delivery.run_id):
                if not self._ledger_open:
                    # Without the ledger the run could be synced twice across a restart; the sync needs
                    # the same warehouse anyway, so report it and let a later delivery try again.
                    self._forget(delivery, Outcome(ERROR, "the delivery ledger in the state schema is "
                                                   f"unreachable: {self._last_ledger_error}"))
                    continue
                try:
                    fresh = self._ledger.claim(delivery)
                except Exception as exc:
                    self._forget(delivery, Outcome(ERROR, f"could not record the delivery in the state "
                                                   f"schema: {_one_line(exc)}"))
                    continue
                if not fresh:
                    log.info("run %s was already handled (state schema); not syncing it again",
                             delivery.run_id)
                    self._remember(delivery, Outcome(NOT_SYNCED, "already handled"))
                    continue
                with self._lock:
                    self._pending.append(delivery)

    def _run_one(self, delivery: Delivery) -> None:
        with self._context.syncing(delivery.run_id):
            try:
                attempt = self._ledger.started(delivery.run_id)
            except Exception as exc:
                self._forget(delivery, Outcome(ERROR, f"could not update the delivery in the state schema: "
                                               f"{_one_line(exc)}"))
                return
            log.info("sync of run %s started (attempt %d)", delivery.run_id, attempt,
                     extra={"job_id": delivery.job_id, "environment_id": delivery.environment_id})
            started = time.monotonic()
            try:
                outcome = self._execute(delivery)
            except Exception as exc:  # the worker must outlive any one sync
                log.exception("sync of run %s failed unexpectedly", delivery.run_id)
                outcome = Outcome(ERROR, f"unexpected error: {_one_line(exc)}")
            level = logging.INFO if outcome.status in (SUCCESS, NOT_SYNCED) else logging.WARNING
            log.log(level, "sync of run %s finished: %s%s", delivery.run_id, outcome.status,
                    f" ({outcome.message})" if outcome.message else "",
                    extra={"status": outcome.status, "seconds": round(time.monotonic() - started, 1)})
            self._finish(delivery, outcome)

    def _finish(self, delivery: Delivery, outcome: Outcome) -> None:
        try:
            self._ledger.finished(delivery.run_id, outcome)
        except Exception as exc:
            log.error("could not record the end of run %s in the state schema: %s", delivery.run_id,
                      _one_line(exc))
        self._remember(delivery, outcome)

    def _remember(self, delivery: Delivery, outcome: Outcome) -> None:
        with self._lock:
            self.processed.append(Processed(delivery.run_id, outcome.status, outcome.message, _now()))
            self._processed_count += 1
            self._outstanding -= 1
            self._lock.notify_all()

    def _forget(self, delivery: Delivery, outcome: Outcome) -> None:
        """Not taken on after all: a later delivery of the same run may try again."""
        log.error("run %s not synced: %s", delivery.run_id, outcome.message)
        with self._lock:
            self._accepted.discard(delivery.run_id)
        self._remember(delivery, outcome)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__
