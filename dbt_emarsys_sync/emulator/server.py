"""Run the emulator app under uvicorn: in the foreground (the CLI) or in a background thread (tests,
the demo, the benchmark). Binds to loopback unless told otherwise: its inspection routes carry no auth.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import uvicorn

from .app import Emulator, EmulatorConfig


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
    # TCP, and without it every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(emulator: Emulator, log_level: str) -> uvicorn.Config:
    # http="auto": httptools when installed (a dependency: it parses faster than h11). The Date header
    # comes from the emulator (its clock may be skewed on purpose), so uvicorn's is off.
    return uvicorn.Config(emulator.app, log_level=log_level, access_log=False, lifespan="off",
                          timeout_keep_alive=30, date_header=False, server_header=False,
                          timeout_graceful_shutdown=2)


def load_store(emulator: Emulator, store_file: str | None) -> None:
    """Load the sandbox's --store file, if there is one. Raises ValueError naming the file."""
    path = Path(store_file) if store_file else None
    if path is None or not path.exists():
        return
    try:
        emulator.store.load(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a store file of the emulator ({err})") from None


def _store_tmp(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".tmp")


def check_store_writable(store_file: str | None) -> None:
    """The --store file can be written at shutdown: its directory exists and takes the temporary file
    it is written through. Raises ValueError naming the file."""
    if store_file is None:
        return
    path = Path(store_file)
    if not path.parent.is_dir():
        raise ValueError(f"--store {path}: the directory {path.parent} does not exist")
    tmp = _store_tmp(path)
    try:
        tmp.touch()
        tmp.unlink()
    except OSError as err:
        raise ValueError(f"--store {path}: cannot write {tmp} ({err.strerror})") from None


def serve_forever(emulator: Emulator, host: str, port: int, log_level: str = "warning",
                  store_file: str | None = None, sock: socket.socket | None = None,
                  store_loaded: bool = False) -> None:
    """Serve until SIGINT/SIGTERM. With `store_file`, contacts, contact lists and seeded fields are
    loaded from it at start and written back at shutdown, so the sandbox remembers earlier syncs.
    `sock`: an already bound socket (`bind_socket`), to know the port before serving;
    `store_loaded`: the caller already loaded `store_file` (to report a bad file before binding)."""
    path = Path(store_file) if store_file else None
    if not store_loaded:
        load_store(emulator, store_file)
    sock = sock or bind_socket(host, port)
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so the store
    # below is still written.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.Server(_uvicorn_config(emulator, log_level)).run(sockets=[sock])
    finally:
        emulator.close()
        if path is not None:
            tmp = _store_tmp(path)
            tmp.write_text(json.dumps(emulator.store.dump()))
            os.replace(tmp, path)


class EmulatorThread:
    """The emulator on a free loopback port in a daemon thread; a context manager.

        with EmulatorThread() as emu:
            emu.url          # http://127.0.0.1:<port>
            emu.emulator     # the Emulator, to inspect or reconfigure
    """

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.emulator = Emulator(config)
        self._sock = bind_socket(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self._server = uvicorn.Server(_uvicorn_config(self.emulator, "warning"))
        self._server.install_signal_handlers = lambda: None  # not the main thread
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="emarsys-emulator", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth2/token"

    def start(self) -> EmulatorThread:
        self._thread.start()
        # Wait on uvicorn's own readiness flag, not a fixed sleep.
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the Emarsys emulator failed to start")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self.emulator.close()   # pending hang/slow faults end now
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
