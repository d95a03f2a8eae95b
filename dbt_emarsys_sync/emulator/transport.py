"""The connection layer: what happens around every request, and the in-process transports.

`ConnectionLayer` wraps the Starlette app (it is what `Emulator.app` is). For each request it
- records it in the request log (method, path, status, body size, API user, time, keys),
- sets the `Date` header from the server's clock (skew included),
- carries out connection faults: closing the socket without an answer (`drop`, `drop_after_write`).

Over a real socket (uvicorn) a dropped connection is closed on the spot. In-process there is no
socket, so the layer raises `ConnectionDropped` and the transports below turn it into the error httpx
raises for a server that hung up (`httpx.RemoteProtocolError`). They also honour the request's read
timeout, raising `httpx.ReadTimeout` while the app goes on (a `hang` fault then behaves as over HTTP).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import httpx

REQUEST_LOG_SIZE = 100_000


class ConnectionDropped(Exception):
    """The emulator closed the connection without answering (in-process use only)."""


class RequestContext:
    """Per-request facts the handlers fill in for the log and the connection layer."""

    __slots__ = ("_close", "dropped", "fault", "keys", "user")

    def __init__(self, close: Callable[[], None] | None):
        self.user: str | None = None
        self.keys: list[str] | None = None
        self.fault: str | None = None
        self.dropped = False
        self._close = close

    def drop(self) -> None:
        """Close the connection without answering; anything the app sends afterwards is discarded."""
        self.dropped = True
        if self._close is not None:
            self._close()


class RequestLog:
    def __init__(self, size: int = REQUEST_LOG_SIZE):
        self._entries: deque[dict] = deque(maxlen=size)
        self._lock = threading.Lock()

    def append(self, entry: dict) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class ConnectionLayer:
    def __init__(self, app, log: RequestLog, server_time: Callable[[], float]):
        self.inner = app
        self.log = log
        self.server_time = server_time

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        date = formatdate(self.server_time(), usegmt=True).encode()
        if scope["path"].startswith("/_emulator/"):   # the control API: not logged, never faulted
            async def dated_send(message):
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"date", date)]
                await send(message)
            await self.inner(scope, receive, dated_send)
            return

        # uvicorn's `send` is a bound method of its request cycle, which holds the socket transport.
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        ctx = RequestContext(transport.close if transport is not None else None)
        scope["emulator"] = ctx
        started = time.time()
        received = 0
        status: int | None = None

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def guarded_send(message):
            nonlocal status
            if ctx.dropped:
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"date", date)]
            await send(message)

        try:
            await self.inner(scope, counting_receive, guarded_send)
        finally:
            entry: dict[str, Any] = {
                "method": scope["method"], "path": scope["path"],
                "query": scope.get("query_string", b"").decode("latin-1"),
                "status": None if ctx.dropped else status, "bytes": max(received, _content_length(scope)),
                "user": ctx.user,
                "time": started,
            }
            if ctx.keys is not None:
                entry["keys"] = ctx.keys
            if ctx.fault is not None:
                entry["fault"] = ctx.fault
            self.log.append(entry)
        if ctx.dropped:
            if transport is None:
                raise ConnectionDropped()
            # Let the loop run connection_lost, so uvicorn sees a disconnected client and neither
            # answers 500 nor logs an error.
            for _ in range(20):
                if getattr(cycle, "disconnected", True):
                    break
                await asyncio.sleep(0)


def _content_length(scope) -> int:
    """The declared body size (a dropped request's body is never read)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout") or {}
    return timeout.get("read")


class InProcessTransport(httpx.BaseTransport):
    """An httpx sync transport that runs the ASGI app in-process, on an event loop of its own (a
    daemon thread), so sync clients need no socket. Several clients may share one transport: closing
    a client stops the loop, and the next request starts it again."""

    def __init__(self, app):
        self._asgi = httpx.ASGITransport(app=app)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="emarsys-emulator-inprocess",
                                                daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def call() -> tuple[int, list, bytes]:
            inner = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self._asgi.handle_async_request(inner)
            return response.status_code, response.headers.raw, await response.aread()

        future = asyncio.run_coroutine_threadsafe(call(), self._running_loop())
        try:
            status, headers, content = future.result(timeout=_read_timeout(request))
        except ConnectionDropped:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=request) from None
        except TimeoutError:
            # Like a real client: give up waiting; the app carries on with the request.
            raise httpx.ReadTimeout("timed out waiting for the emulator", request=request) from None
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()


class InProcessAsyncTransport(httpx.ASGITransport):
    """httpx.ASGITransport with the emulator's connection faults and read timeouts mapped to httpx's
    errors, for `httpx.AsyncClient(transport=emulator.async_transport())`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        task = asyncio.ensure_future(super().handle_async_request(request))
        try:
            return await asyncio.wait_for(asyncio.shield(task), _read_timeout(request))
        except ConnectionDropped:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=request) from None
        except TimeoutError:
            raise httpx.ReadTimeout("timed out waiting for the emulator", request=request) from None
