"""What a run did: per-sync counts and samples, live progress, the JSON artifact, the console table, the
exit code."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
from bisect import insort
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_SKIPPED, SyncFailed

MAX_SAMPLES = 20


def _sample_order(sample: dict) -> tuple:
    return (sample["key"] is not None, sample["key"] or "", sample["code"], sample["reason"])
ARTIFACT_NAME = "emarsys_sync_results.json"         # a run's results
PLAN_ARTIFACT_NAME = "emarsys_sync_plan.json"      # a dry run's: never overwrites the last run's results
STATUS_STYLES = {"success": "green", "rejected_rows": "yellow", "failed": "red", "skipped": "dim",
                 "planned": "cyan"}


@dataclass
class SyncReport:
    name: str
    model: str
    object: str
    behaviour: str
    status: str = "pending"          # success | rejected_rows | failed | skipped | planned (dry run)
    message: str = ""
    run_id: str = ""
    dry_run: bool = False
    full_refresh: bool = False
    # What the diff found (in the warehouse, before anything was sent).
    rows_read: int = 0                # rows in the model
    unchanged: int = 0                # rows whose values Emarsys already has: never read, never sent
    planned_new: int = 0              # keys this sync never had acknowledged
    planned_changed: int = 0          # keys acknowledged before whose values (or mapping) changed
    planned_removals: int = 0         # mirror: members who left the audience
    departed: int = 0                 # contacts: keys that left the model (contacts are never deleted)
    would_create: int | None = None   # dry run, when Emarsys could tell (checkids)
    would_update: int | None = None
    # What was sent and what Emarsys said.
    sent: int = 0
    acknowledged: int = 0
    created: int = 0
    updated: int = 0
    added: int = 0                    # mirror: members added to the list
    removed: int = 0                  # mirror: members removed from the list
    rejected: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    rejected_samples: list[dict] = field(default_factory=list)
    failed_retryable: int = 0         # keys of requests that failed as a whole; sent again next run
    recovered: int = 0                # acknowledged rows of an interrupted run, kept by this one
    list_id: int | None = None
    samples: dict[str, list[dict]] = field(default_factory=dict)   # dry run: sample rows per category
    api_requests: int = 0
    bytes_sent: int = 0
    started_at: str = ""
    plan_seconds: float = 0.0
    send_seconds: float = 0.0
    duration_seconds: float = 0.0
    _t0: float = field(default=0.0, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._t0 = time.monotonic()

    @property
    def finished(self) -> bool:
        return self.status not in ("pending", "running")

    def finish(self, status: str | None = None, message: str = "") -> None:
        self.duration_seconds = round(time.monotonic() - self._t0, 3)
        if status is None:
            status = "rejected_rows" if self.rejected else "success"
        self.status, self.message = status, message or self.message

    def reject(self, key: str | None, code: str, reason: str, count: int = 1) -> None:
        with self._lock:
            self.rejected += count
            counts = Counter(self.rejected_by_code)
            counts[str(code)] += count
            self.rejected_by_code = dict(counts)
            sample = {"key": key, "code": str(code), "reason": reason}
            # Distinct examples (a key rejected on many rows is shown once), the first in key order:
            # the same ones every run, whatever order requests settle in.
            if sample in self.rejected_samples:
                return
            if len(self.rejected_samples) >= MAX_SAMPLES:
                if _sample_order(sample) >= _sample_order(self.rejected_samples[-1]):
                    return
                self.rejected_samples.pop()
            insort(self.rejected_samples, sample, key=_sample_order)

    @property
    def planned_sends(self) -> int:
        return self.planned_new + self.planned_changed

    def as_dict(self) -> dict:
        with self._lock:
            return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
                    if not f.name.startswith("_")}


@dataclass
class RunReport:
    syncs: list[SyncReport] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    dry_run: bool = False
    state_schema: str = ""
    api_requests: int = 0             # every request of the run, including the field catalogue
    samples: int = 5                  # example rows the summary shows per category (--samples)

    @property
    def exit_code(self) -> int:
        """3 a sync failed > 4 a sync was skipped (the last build) > 1 rows rejected > 0 (errors.py)."""
        return self._exit_code(count_skipped=True)

    @property
    def exit_code_of_ran_syncs(self) -> int:
        """The exit code, leaving the skipped syncs out: for a caller that expects some syncs to be
        skipped (the dbt Cloud service syncs what one run built, and reports the skipped ones itself)."""
        return self._exit_code(count_skipped=False)

    def _exit_code(self, count_skipped: bool) -> int:
        if any(s.status == "failed" for s in self.syncs):
            return EXIT_FAILED
        if count_skipped and any(s.status == "skipped" for s in self.syncs):
            return EXIT_SKIPPED
        if any(s.status == "rejected_rows" or (s.dry_run and s.rejected) for s in self.syncs):
            return EXIT_REJECTED
        return EXIT_OK

    def as_dict(self) -> dict:
        from . import __version__

        return {
            "metadata": {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "started_at": self.started_at, "dbt_emarsys_sync_version": __version__,
                         "dry_run": self.dry_run, "state_schema": self.state_schema},
            "results": [s.as_dict() for s in self.syncs],
            "api_requests": self.api_requests,
            "exit_code": self.exit_code,
        }

    @property
    def artifact_name(self) -> str:
        return PLAN_ARTIFACT_NAME if self.dry_run else ARTIFACT_NAME

    def write(self, target_dir: Path) -> Path:
        """Write the artifact atomically: a crash or a full disk never leaves half a file behind. When
        it can't be written (disk full, read-only directory), SyncFailed names the file and why."""
        path = target_dir / self.artifact_name
        tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.as_dict(), indent=2, default=str))
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise SyncFailed(f"could not write the run's results to {path}: {exc.strerror or exc} (what "
                             "Emarsys acknowledged is recorded in the state schema all the same)") from None
        return path


# -- live progress ------------------------------------------------------------------------------------


class Progress:
    """Progress per sync: a live rich display on a terminal, plain periodic lines elsewhere (CI logs).
    Thread-safe: syncs report from their own threads."""

    def __init__(self, console=None, interval: float = 10.0, clock=time.monotonic):
        self.console = console
        self.live = console is not None and console.is_terminal
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, dict] = {}
        self._rich = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "Progress":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.console, transient=False)
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def phase(self, sync: str, text: str, total: int | None = None) -> None:
        with self._lock:
            st = self._state.setdefault(sync, {"done": 0, "total": 0, "last": 0.0})
            st["phase"] = text
            if total is not None:
                st["total"], st["done"] = total, 0
            if self._rich is not None:
                description = f"{sync}: {text}"
                if sync not in self._tasks:
                    self._tasks[sync] = self._rich.add_task(description, total=total or None)
                else:
                    self._rich.update(self._tasks[sync], description=description,
                                      **({"total": total or None, "completed": 0} if total is not None else {}))
            elif self.console is not None:
                suffix = f" ({total:,} rows)" if total else ""
                self.console.print(f"{sync}: {text}{suffix}", markup=False, highlight=False)
                st["last"] = self._clock()

    def advance(self, sync: str, n: int) -> None:
        with self._lock:
            st = self._state.setdefault(sync, {"done": 0, "total": 0, "last": 0.0, "phase": ""})
            st["done"] += n
            if self._rich is not None and sync in self._tasks:
                self._rich.update(self._tasks[sync], completed=st["done"])
            elif self.console is not None and not self.live and self._clock() - st["last"] >= self.interval:
                st["last"] = self._clock()
                total = st["total"]
                share = f" ({100 * st['done'] / total:.0f}%)" if total else ""
                self.console.print(f"{sync}: {st['phase']} {st['done']:,}/{total:,}{share}", markup=False,
                                   highlight=False)

    def done(self, sync: str, report: SyncReport) -> None:
        with self._lock:
            if self._rich is not None and sync in self._tasks:
                self._rich.update(self._tasks[sync], description=f"{sync}: {report.status}")
            elif self.console is not None:
                self.console.print(f"{sync}: {report.status} in {report.duration_seconds:.1f}s", markup=False,
                                   highlight=False)


# -- the summary -----------------------------------------------------------------------------------


def render(report: RunReport, console) -> None:
    from rich.table import Table

    dry = report.dry_run
    title = "Emarsys sync plan (dry run: nothing was sent)" if dry else "Emarsys sync results"
    table = Table(title=title, show_lines=False)
    numeric = ["rows", "unchanged", "new", "changed", "removals", "rejected"] if dry else \
        ["rows", "unchanged", "sent", "created", "updated", "added", "removed", "rejected", "requests", "seconds"]
    for col in ["sync", "model", "status", *numeric]:
        table.add_column(col, justify="right" if col in numeric else "left")
    for s in report.syncs:
        style = STATUS_STYLES.get(s.status, "")
        cells = [str(s.rows_read), str(s.unchanged)]
        if dry:
            cells += [str(s.planned_new), str(s.planned_changed), str(s.planned_removals), str(s.rejected)]
        else:
            cells += [str(s.sent), str(s.created), str(s.updated), str(s.added), str(s.removed), str(s.rejected),
                      str(s.api_requests), f"{s.duration_seconds:.1f}"]
        table.add_row(s.name, s.model, f"[{style}]{s.status}[/]", *cells)
    console.print(table)
    for s in report.syncs:
        if s.message:
            console.print(f"[bold]{s.name}[/]: {s.message}", markup=True, highlight=False)
        if s.recovered:
            console.print(f"[bold]{s.name}[/]: kept {s.recovered} rows an interrupted run had sent",
                          highlight=False)
        if dry and s.would_create is not None:
            console.print(f"[bold]{s.name}[/]: {new_keys_in_emarsys(s)}", highlight=False)
        if s.rejected:
            reasons = ", ".join(f"{code}: {n}" for code, n in sorted(s.rejected_by_code.items()))
            verb = "would be rejected" if dry else "rejected"
            shown = s.rejected_samples[:report.samples]
            console.print(f"[bold]{s.name}[/]: {s.rejected} row{'' if s.rejected == 1 else 's'} {verb} ({reasons})"
                          f"{'; for example:' if shown else ''}", highlight=False)
            for sample in shown:
                console.print(f"  - {sample['key']!s}: {sample['reason']}", markup=False, highlight=False)
        for category, rows in s.samples.items():
            if rows:
                console.print(f"[bold]{s.name}[/]: {category}, for example:", highlight=False)
                for row in rows:
                    console.print("  - " + ", ".join(f"{k}={v!s}" for k, v in row.items()), markup=False,
                                  highlight=False)


def new_keys_in_emarsys(s: SyncReport) -> str:
    """What checkids said of a dry run's new keys (would_update also counts the changed rows)."""
    found = (s.would_update or 0) - s.planned_changed
    checked = found + (s.would_create or 0)
    if s.behaviour == "update_only":
        missing = s.planned_new - found
        return (f"of the {_keys(s.planned_new)}, Emarsys has a contact for {found}; the other {missing} "
                f"{'has' if missing == 1 else 'have'} none and would be rejected (update_only never creates)")
    return (f"of the {_keys(checked)}, Emarsys already has {found} (their contacts would be updated) and "
            f"{s.would_create} would be created")


def _keys(n: int) -> str:
    return f"{n} new key" if n == 1 else f"{n} new keys"
