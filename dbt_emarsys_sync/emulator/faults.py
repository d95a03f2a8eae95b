"""Scripted faults: the next N matching requests misbehave in a chosen way.

A fault is `{"type": T, "count": N (default 1), "path": "<substring of the request path>",
"method": "<HTTP method>", ...}`; `path` and `method` are optional filters. Types:

    status            answer `status` (429, 500, 502 or 503) with the Emarsys envelope; 429 carries
                      replyCode 7003 and the rate-limit headers, never Retry-After; its
                      X-RateLimit-Reset is `reset_seconds` from now (default 60: a full window; a
                      sliding window frees its next slot sooner, which tests use to keep waits short)
    hang              hold the request `seconds` before processing it and answering normally
                      (to outlast a client's timeout: the write still happens, later)
    slow              process the request, then hold the answer `seconds`
    drop              close the connection without answering, before processing
    drop_after_write  process the request, then close the connection without answering
    already_exists    upserts/creates of keys that don't exist yet fail per key with 2009 "Contact
                      with the external id already exists" without creating (the documented race)

Faults apply to authenticated API requests and to the token endpoint, in the order they were added:
a request consumes one count of the first pending fault that matches it.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

FAULT_TYPES = ("status", "hang", "slow", "drop", "drop_after_write", "already_exists")
FAULT_STATUSES = (429, 500, 502, 503)
_KEYS = {"type", "count", "path", "method", "status", "seconds", "reply_code", "reply_text",
         "reset_seconds"}

# The envelope each injected status answers with (emarsys-api.md §2.2, §2.3, §9).
STATUS_REPLIES = {
    429: (7003, "Too many requests for this account and resource within the last minute"),
    500: (2011, "Database connection error"),
    502: (1003, "Bad gateway"),
    503: (1003, "Service temporarily unavailable"),
}


@dataclass
class Fault:
    type: str
    count: int = 1
    path: str | None = None
    method: str | None = None
    status: int | None = None
    seconds: float | None = None
    reply_code: int | None = None
    reply_text: str | None = None
    reset_seconds: float | None = None     # 429 only: X-RateLimit-Reset this many seconds from now

    @classmethod
    def from_dict(cls, spec: Any) -> Fault:
        """Validate a fault given as JSON. Raises ValueError saying what is wrong."""
        if not isinstance(spec, dict):
            raise ValueError(f"a fault is an object with a 'type', not {spec!r}")
        unknown = set(spec) - _KEYS
        if unknown:
            raise ValueError(f"fault {spec.get('type')!r}: unknown key(s) {', '.join(sorted(unknown))}")
        kind = spec.get("type")
        if kind not in FAULT_TYPES:
            raise ValueError(f"fault type must be one of {', '.join(FAULT_TYPES)}, not {kind!r}")
        count = spec.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"fault {kind!r}: 'count' must be a positive integer, not {count!r}")
        for name in ("path", "method"):
            if spec.get(name) is not None and not isinstance(spec[name], str):
                raise ValueError(f"fault {kind!r}: '{name}' must be a string")
        status = spec.get("status")
        if kind == "status":
            if status not in FAULT_STATUSES:
                raise ValueError(f"fault 'status': 'status' must be one of "
                                 f"{', '.join(map(str, FAULT_STATUSES))}, not {status!r}")
        elif status is not None:
            raise ValueError(f"fault {kind!r}: 'status' belongs to faults of type 'status'")
        seconds = spec.get("seconds")
        if kind in ("hang", "slow"):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                raise ValueError(f"fault {kind!r}: 'seconds' must be a number of seconds >= 0")
        elif seconds is not None:
            raise ValueError(f"fault {kind!r}: 'seconds' belongs to faults of type 'hang' or 'slow'")
        reply_code = spec.get("reply_code")
        if reply_code is not None and (isinstance(reply_code, bool) or not isinstance(reply_code, int)):
            raise ValueError(f"fault {kind!r}: 'reply_code' must be an integer")
        if spec.get("reply_text") is not None and not isinstance(spec["reply_text"], str):
            raise ValueError(f"fault {kind!r}: 'reply_text' must be a string")
        reset = spec.get("reset_seconds")
        if reset is not None:
            if status != 429:
                raise ValueError(f"fault {kind!r}: 'reset_seconds' belongs to faults of status 429")
            if isinstance(reset, bool) or not isinstance(reset, (int, float)) or not 0 <= reset <= 3600:
                raise ValueError("fault 'status': 'reset_seconds' must be a number of seconds from 0 to 3600")
        method = spec.get("method")
        return cls(type=kind, count=count, path=spec.get("path"), method=method.upper() if method else None,
                   status=status, seconds=float(seconds) if seconds is not None else None,
                   reply_code=reply_code, reply_text=spec.get("reply_text"),
                   reset_seconds=float(reset) if reset is not None else None)

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method == method)
                and (self.path is None or self.path in path))

    def reply(self) -> tuple[int, str]:
        """(replyCode, replyText) of a status fault's envelope."""
        code, text = STATUS_REPLIES[self.status or 500]
        return (self.reply_code if self.reply_code is not None else code,
                self.reply_text if self.reply_text is not None else text)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class FaultBook:
    """Pending faults, consumed in order by the requests they match. Thread-safe."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, specs: list) -> list[Fault]:
        """Validate all, then append all (a bad fault adds none). Raises ValueError."""
        if not isinstance(specs, list):
            raise ValueError("'faults' must be a list of fault objects")
        faults = []
        for n, spec in enumerate(specs):
            try:
                faults.append(Fault.from_dict(spec))
            except ValueError as err:
                raise ValueError(f"faults[{n}]: {err}") from None
        with self._lock:
            self._faults.extend(faults)
        return faults

    def take(self, method: str, path: str) -> Fault | None:
        if not self._faults:   # the common case, without the lock
            return None
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[dict]:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
