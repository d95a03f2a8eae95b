"""What a run did: per-sync counts and samples, the JSON artifact, the console table, the exit code."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import EXIT_FAILED, EXIT_OK, EXIT_REJECTED

MAX_SAMPLES = 20
ARTIFACT_NAME = "emarsys_sync_results.json"


@dataclass
class SyncReport:
    name: str
    model: str
    object: str
    behaviour: str
    status: str = "pending"          # success | rejected_rows | failed | skipped
    message: str = ""
    rows_read: int = 0
    sent: int = 0
    acknowledged: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    rejected_samples: list[dict] = field(default_factory=list)
    failed_retryable: int = 0         # keys of requests that failed as a whole; sent again next run
    api_requests: int = 0
    bytes_sent: int = 0
    started_at: str = ""
    duration_seconds: float = 0.0
    _t0: float = field(default=0.0, repr=False)

    def start(self) -> None:
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._t0 = time.monotonic()

    def finish(self, status: str | None = None, message: str = "") -> None:
        self.duration_seconds = round(time.monotonic() - self._t0, 3)
        if status is None:
            status = "rejected_rows" if self.rejected else "success"
        self.status, self.message = status, message or self.message

    def reject(self, key: str | None, code: str, reason: str) -> None:
        self.rejected += 1
        counts = Counter(self.rejected_by_code)
        counts[code] += 1
        self.rejected_by_code = dict(counts)
        if len(self.rejected_samples) < MAX_SAMPLES:
            self.rejected_samples.append({"key": key, "code": code, "reason": reason})

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("_t0", None)
        return data


@dataclass
class RunReport:
    syncs: list[SyncReport] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def exit_code(self) -> int:
        if any(s.status == "failed" for s in self.syncs):
            return EXIT_FAILED
        if any(s.status == "rejected_rows" for s in self.syncs):
            return EXIT_REJECTED
        return EXIT_OK

    def as_dict(self) -> dict:
        from . import __version__

        return {
            "metadata": {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "started_at": self.started_at, "dbt_emarsys_sync_version": __version__},
            "results": [s.as_dict() for s in self.syncs],
            "exit_code": self.exit_code,
        }

    def write(self, target_dir: Path) -> Path:
        """Write the artifact atomically: a crash or a full disk never leaves half a file behind."""
        target_dir.mkdir(parents=True, exist_ok=True)
        path = target_dir / ARTIFACT_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2, default=str))
        os.replace(tmp, path)
        return path


def render(report: RunReport, console) -> None:
    from rich.table import Table

    table = Table(title="Emarsys sync results", show_lines=False)
    for col in ("sync", "model", "status", "read", "sent", "created", "updated", "rejected",
                "requests", "seconds"):
        table.add_column(col, justify="right" if col in ("read", "sent", "created", "updated",
                                                          "rejected", "requests", "seconds") else "left")
    for s in report.syncs:
        style = {"success": "green", "rejected_rows": "yellow", "failed": "red", "skipped": "dim"}.get(
            s.status, "")
        table.add_row(s.name, s.model, f"[{style}]{s.status}[/]", str(s.rows_read), str(s.sent),
                      str(s.created), str(s.updated), str(s.rejected), str(s.api_requests),
                      f"{s.duration_seconds:.1f}")
    console.print(table)
    for s in report.syncs:
        if s.message:
            console.print(f"[bold]{s.name}[/]: {s.message}", markup=True, highlight=False)
        if s.rejected:
            reasons = ", ".join(f"{code}: {n}" for code, n in sorted(s.rejected_by_code.items()))
            console.print(f"[bold]{s.name}[/]: {s.rejected} rows rejected ({reasons}); for example:",
                          highlight=False)
            for sample in s.rejected_samples[:5]:
                console.print(f"  - {sample['key']!s}: {sample['reason']}", markup=False, highlight=False)
