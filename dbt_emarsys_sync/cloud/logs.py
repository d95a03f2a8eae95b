"""The service's logs: one line per event, as text or JSON lines, each with the dbt Cloud run id it is
about (`dbt_cloud_run_id`, null for lines about no run), and with known secret values masked.

Which run a line is about comes from two places: a context variable, set while a delivery is handled
and while the worker runs a sync; and, for the helper threads a sync starts (which don't inherit context
variables), the run the worker is syncing right now. Lines from the server's event loop use only the
context variable, so a delivery logged while another run syncs carries its own id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping

REDACTED = "[redacted]"
# Environment variables whose values are masked wherever they would appear in a log line.
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSPHRASE|PRIVATE_KEY|API_KEY|CREDENTIALS)", re.I)
MIN_SECRET_LENGTH = 6   # shorter values would mask ordinary words
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "dbt_cloud_run_id",
                                                          "color_message"}  # uvicorn's coloured copy


class RunLogContext:
    """Which dbt Cloud run the current log line is about."""

    def __init__(self) -> None:
        self._current: ContextVar[int | None] = ContextVar("dbt_cloud_run_id", default=None)
        self._syncing: int | None = None
        self._loop_thread: int | None = None

    @contextmanager
    def run(self, run_id: int | None) -> Iterator[None]:
        token = self._current.set(run_id)
        try:
            yield
        finally:
            self._current.reset(token)

    @contextmanager
    def syncing(self, run_id: int) -> Iterator[None]:
        """Mark `run_id` as the run being synced, for the lines of the threads the sync starts."""
        self._syncing = run_id
        try:
            with self.run(run_id):
                yield
        finally:
            self._syncing = None

    def mark_event_loop_thread(self) -> None:
        self._loop_thread = threading.get_ident()

    def run_id(self) -> int | None:
        current = self._current.get()
        if current is not None:
            return current
        if threading.get_ident() == self._loop_thread:
            return None
        return self._syncing


class _RunIdFilter(logging.Filter):
    def __init__(self, context: RunLogContext):
        super().__init__()
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        record.dbt_cloud_run_id = self.context.run_id()
        return True


class _Redactor:
    def __init__(self, secrets: Iterable[str]):
        values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonLinesFormatter(logging.Formatter):
    def __init__(self, redact: _Redactor):
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "dbt_cloud_run_id": getattr(record, "dbt_cloud_run_id", None),
            "message": record.getMessage(),
        }
        for key, value in _extra_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self, redact: _Redactor):
        super().__init__("%(asctime)s %(levelname)s %(name)s [dbt_cloud_run_id=%(run)s] %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        run_id = getattr(record, "dbt_cloud_run_id", None)
        record.run = "-" if run_id is None else run_id
        text = super().format(record)
        extra = {k: v for k, v in _extra_fields(record).items() if k != "run"}
        if extra:
            text += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extra.items())
        return self.redact(text)


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c.isspace() for c in text)) else text


def secrets_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of variables that look like secrets (EMARSYS_CLIENT_SECRET, DBT_ENV_SECRET_*, ...)."""
    env = os.environ if env is None else env
    return [value for name, value in env.items() if SECRET_NAME.search(name) and value]


def configure(context: RunLogContext, *, fmt: str = "text", level: str = "info",
              secrets: Iterable[str] = (), stream=None) -> logging.Handler:
    """Send every logger's lines through one handler with the run id and the masking."""
    redact = _Redactor([*secrets, *secrets_from_env()])
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLinesFormatter(redact) if fmt == "json" else TextFormatter(redact))
    handler.addFilter(_RunIdFilter(context))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # httpx logs every request URL at INFO; uvicorn's access log is replaced by our own request lines.
    if level.lower() != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
    return handler
