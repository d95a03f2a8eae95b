"""Helpers shared by the client's unit and integration tests: the emulator (in-process or on a
loopback port), a client for it, its control API (`/_emulator/...`), and a fake clock."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Iterator

import httpx

from dbt_emarsys_sync.emarsys import EmarsysClient, EmarsysSettings, RateLimiter, RetryPolicy
from dbt_emarsys_sync.emulator import Emulator, EmulatorConfig, EmulatorThread

IN_PROCESS_URL = "http://emulator.invalid"


@dataclass
class EmulatorHandle:
    emulator: Emulator
    url: str
    transport: httpx.BaseTransport | None      # None: talk to `url` over loopback

    @property
    def config(self) -> EmulatorConfig:
        return self.emulator.config

    def control(self) -> httpx.Client:
        """A plain client for the emulator's control API (`/_emulator/...`, no auth)."""
        return httpx.Client(base_url=self.url, transport=self.transport, timeout=30)

    def post(self, path: str, body: object = None) -> object:
        with self.control() as http:
            response = http.post(path, json=body)
            response.raise_for_status()
            return response.json() if response.content else None

    def get(self, path: str) -> object:
        with self.control() as http:
            response = http.get(path)
            response.raise_for_status()
            return response.json()

    def fault(self, **spec) -> None:
        self.post("/_emulator/faults", {"faults": [spec]})

    def settings(self, **values) -> None:
        self.post("/_emulator/settings", values)

    def settings_for(self, scheme: str, **overrides) -> EmarsysSettings:
        config = self.config
        values = dict(api_url=self.url, scheme=scheme, auth_url=f"{self.url}/oauth2/token",
                      timeout_seconds=30.0)
        if scheme == "oauth":
            values.update(client_id=config.client_id, client_secret=config.client_secret)
        else:
            values.update(username=config.username, secret=config.secret)
        values.update(overrides)
        return EmarsysSettings(**values)

    def client(self, scheme: str = "oauth", *, limiter: RateLimiter | None = None,
               retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None,
               **overrides) -> EmarsysClient:
        """The real client, pointed at this emulator, with a limiter of its own so tests never share
        the process-wide per-user limiter. Unless given, that limiter doesn't pace and waits out the
        server's rate-limit blocks on a fake clock (see `client.limiter.clock.sleeps`)."""
        if limiter is None:
            clock = FakeClock()
            limiter = RateLimiter(0, clock=clock.monotonic, wall_clock=clock.wall, sleep=clock.sleep)
            limiter.clock = clock  # type: ignore[attr-defined]
        return EmarsysClient(self.settings_for(scheme, **overrides), transport=transport or self.transport,
                             limiter=limiter, retry=retry)

    def recording_transport(self) -> "RecordingTransport":
        return RecordingTransport(self.transport or httpx.HTTPTransport())

    def requests_log(self) -> list[dict]:
        return self.get("/_emulator/requests")  # type: ignore[return-value]


class RecordingTransport(httpx.BaseTransport):
    """Passes requests on and remembers them (to look at the headers the client sent)."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@contextlib.contextmanager
def in_process_emulator(config: EmulatorConfig | None = None) -> Iterator[EmulatorHandle]:
    config = config or EmulatorConfig(rate_limit=0)
    emulator = Emulator(config)
    make_transport = getattr(emulator, "sync_transport", None)
    if make_transport is None:
        # An emulator without the in-process transport: serve it on loopback instead.
        with loopback_emulator(config) as handle:
            yield handle
        return
    transport = make_transport()
    try:
        yield EmulatorHandle(emulator, IN_PROCESS_URL, transport)
    finally:
        close = getattr(transport, "close", None)
        if close:
            close()


@contextlib.contextmanager
def loopback_emulator(config: EmulatorConfig | None = None) -> Iterator[EmulatorHandle]:
    with EmulatorThread(config or EmulatorConfig(rate_limit=0)) as thread:
        yield EmulatorHandle(thread.emulator, thread.url, None)


@dataclass
class FakeClock:
    """A monotonic and a wall clock that only move when something sleeps on them."""

    now: float = 1_000.0
    wall_offset: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)


def messages(caplog, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]
