"""A throwaway PostgreSQL server for the adapter tests: `initdb` + `pg_ctl` on a free loopback port.

The server refuses to run as root, so when the tests run as root (CI) the server runs as the `postgres`
system user through `runuser`. Its data directory and socket live in a fresh temp directory, trust auth,
listening on 127.0.0.1 only; the fixture stops it and removes the directory at the end of the session.

    def test_something(postgres_server):
        postgres_server.port, postgres_server.user, postgres_server.create_database("x")
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUPERUSER = "test"


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: PATH, `pg_config --bindir`, or Debian's versioned directories."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int = 0
    user: str = SUPERUSER
    host: str = "127.0.0.1"
    _as_postgres: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self._as_postgres, *args], capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stdout}\n{proc.stderr}\n{log[-2000:]}")
        return proc

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: hand the directory to the postgres system user.
            shutil.chown(self.root, "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run(str(self.bindir / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", self.user,
                  "--no-sync", "-E", "UTF8", "--locale", "C")
        # A port picked free can be taken before the server binds it: try a few.
        for _ in range(5):
            self.port = _free_port()
            options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            proc = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                             "-l", str(self.root / "log"), "-w", "-t", "60", "start", check=False)
            if proc.returncode == 0 and self._ready():
                return self
        raise RuntimeError("the throwaway PostgreSQL server did not start:\n"
                           + (self.root / "log").read_text()[-3000:])

    def _ready(self) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            proc = subprocess.run([str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port)],
                                  capture_output=True)
            if proc.returncode == 0:
                return True
            time.sleep(0.1)  # pg_isready is the readiness probe; this only paces it
        return False

    def stop(self) -> None:
        if self.data_dir.exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop",
                      check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = subprocess.run(["psql", "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database,
                               "-v", "ON_ERROR_STOP=1", "-Atc", sql], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        self.psql(f'create database "{name}"')
        return name

    def profile(self, database: str, schema: str = "public", threads: int = 4) -> dict:
        """A dbt-postgres output for profiles.yml."""
        return {"type": "postgres", "host": self.host, "port": self.port, "user": self.user, "password": "",
                "dbname": database, "schema": schema, "threads": threads}


def start_postgres() -> PostgresServer:
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) are missing: install the postgresql package "
                           "(./dev.sh test does it when run as root)")
    # Not under pytest's tmp dirs: those are private to root and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="emarsys-sync-pg-"))
    return PostgresServer(bindir=bindir, root=root).start()


@pytest.fixture(scope="session")
def postgres_server():
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
