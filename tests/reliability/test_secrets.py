"""Secrets stay secret, and TLS is verified.

Every command (`run`, `plan`, `validate`, `ls`, `state show`, `exposures`) with `--log-level debug`
(the runs as processes of their own, the others in-process with their log lines captured), with distinctive OAuth and WSSE secrets, through the paths most likely to print
one: retries, a token refresh, a refused credential, a skewed WSSE clock, rejected rows. Then every
place they could land is scanned for the secrets, for the Basic-auth header derived from the OAuth
secret, for the bearer tokens the emulator issued and for WSSE headers: stdout, stderr, every file the
runs left in the project (dbt's logs, target/ artifacts, the DuckDB file), every value of every table
in the warehouse (the state schema included), and the text of the client's exceptions and objects.

TLS: the emulator served over HTTPS with a self-signed certificate for 127.0.0.1 (made with openssl).
Without EMARSYS_CA_BUNDLE the connection is refused; with it, the sync runs; no setting that looks like
an off switch turns verification off, and no code in the package disables it.
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import subprocess
import threading
import traceback
from pathlib import Path

import duckdb
import httpx
import pytest
import uvicorn

from dbt_emarsys_sync.emarsys import EmarsysClient, EmarsysSettings
from dbt_emarsys_sync.emarsys.errors import EmarsysError
from dbt_emarsys_sync.emulator import Emulator, EmulatorConfig, EmulatorThread
from dbt_emarsys_sync.emulator.server import bind_socket
from tests.reliability.support import (DATABASE, Control, cli, cli_subprocess, ok_people_rows, person,
                                       write_audience, write_people)

pytestmark = pytest.mark.reliability

PACKAGE = Path(__file__).resolve().parents[2] / "dbt_emarsys_sync"


class Secrets:
    def __init__(self):
        self.client_id = "reliability-client"
        self.client_secret = "oauth-secret-" + secrets.token_hex(12)
        self.username = "reliability-wsse"
        self.wsse_secret = "wsse-secret-" + secrets.token_hex(12)
        self.basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        self.tokens: set[str] = set()

    def fixed(self) -> list[str]:
        return [self.client_secret, self.wsse_secret, self.basic]

    def all(self) -> list[str]:
        return self.fixed() + sorted(self.tokens)

    def env(self, emu, scheme: str = "oauth", **extra: str) -> dict[str, str]:
        env = {"EMARSYS_API_URL": emu.url, "EMARSYS_AUTH_URL": emu.token_url}
        if scheme == "oauth":
            env.update(EMARSYS_CLIENT_ID=self.client_id, EMARSYS_CLIENT_SECRET=self.client_secret)
        else:
            env.update(EMARSYS_USERNAME=self.username, EMARSYS_SECRET=self.wsse_secret)
        env.update(extra)
        return env

    def remember_tokens(self, emu) -> None:
        # The emulator's own record of the bearer tokens it issued (test-only inspection of its memory).
        issued = getattr(emu.emulator.auth, "_tokens", None)
        assert issued is not None, "the emulator no longer keeps its issued tokens where this test looks"
        self.tokens.update(issued)


# WSSE headers and bearer tokens in any form: never printed, whoever's they are.
HEADER_PATTERNS = [re.compile(p) for p in (r"PasswordDigest\s*=", r"UsernameToken", r"Bearer\s+[A-Za-z0-9_\-]{16,}",
                                            r"Basic\s+[A-Za-z0-9+/=]{16,}", r"access_token")]


def leaks(text: str, secrets_: Secrets) -> list[str]:
    found = [s[:12] + "..." for s in secrets_.all() if s in text]
    found += [p.pattern for p in HEADER_PATTERNS if p.search(text)]
    return found


def warehouse_text(database: Path) -> str:
    """Every value of every table and view in the DuckDB file (the state schema included), as text."""
    con = duckdb.connect(str(database))
    try:
        parts = []
        for schema, table in con.execute("select table_schema, table_name from information_schema.tables").fetchall():
            rows = con.execute(f'select * from "{schema}"."{table}"').fetchall()
            parts.append(f"{schema}.{table}: " + repr(rows))
        return "\n".join(parts)
    finally:
        con.close()


def files_text(root: Path) -> dict[str, str]:
    """Every file under `root`, as text (bytes decoded leniently), by path."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            out[str(path.relative_to(root))] = path.read_bytes().decode("utf-8", "replace")
    return out


@pytest.fixture
def secret_emulator():
    s = Secrets()
    config = EmulatorConfig(rate_limit=0, client_id=s.client_id, client_secret=s.client_secret,
                            username=s.username, secret=s.wsse_secret)
    with EmulatorThread(config) as emu:
        yield emu, s


def test_no_command_prints_or_stores_a_secret(project, secret_emulator):
    emu, s = secret_emulator
    control = Control(emu)
    write_people(project, [*ok_people_rows(20), person(99, email="not-an-email"), person(98, first_name="x" * 70)])
    write_audience(project, [{"email": person(i)["email"], "first_name": "F"} for i in range(1, 6)])
    debug = ["--log-level", "debug"]
    outcomes = {}

    def command(name: str, args: list[str], env: dict, expect: tuple[int, ...], own_process: bool = False) -> None:
        # The runs as processes of their own; the other commands in-process, their debug log lines
        # captured on their stderr all the same (support.cli).
        outcome = cli_subprocess(project, [*debug, *args], env) if own_process else \
            cli(project, [*debug, *args], env, logs=True)
        assert outcome.exit_code in expect, f"{name}: {outcome.describe()}"
        assert "Traceback" not in outcome.output, f"{name}: {outcome.describe()}"
        outcomes[name] = outcome
        s.remember_tokens(emu)

    # A run through retries (503s, a lost connection), a token that expires and is refreshed, and
    # rejected rows (an invalid email; text over a limit).
    control.settings(token_ttl=2)
    control.add_faults({"type": "status", "status": 503, "count": 2, "path": "/contact"},
                       {"type": "drop", "count": 1, "path": "/contact"},
                       {"type": "slow", "seconds": 2.5, "count": 1, "path": "/contactlist"})
    command("run oauth", ["run"], s.env(emu), (1,), own_process=True)
    control.settings(clock_skew=400)           # WSSE: refused as outside the time frame, then re-signed
    write_people(project, [person(i, first_name=f"Changed{i}") for i in range(1, 21)])
    command("run wsse (skewed clock)", ["run", "--select", "contacts"], s.env(emu, "wsse"), (0,), own_process=True)
    control.settings(clock_skew=0)
    # Refused credentials: the error names the settings, never their values.
    command("run, wrong OAuth secret", ["run"], s.env(emu, EMARSYS_CLIENT_SECRET=s.client_secret + "-wrong"), (2,),
            own_process=True)
    # In-process from here on (this process then keeps the DuckDB file open: no other process after).
    command("plan", ["plan"], s.env(emu), (0, 1))
    command("validate", ["validate"], s.env(emu), (0,))
    command("ls", ["ls", "--output", "json"], s.env(emu), (0,))
    command("state show", ["state", "show", "--output", "json"], s.env(emu), (0,))
    command("exposures", ["exposures"], s.env(emu), (0,))
    command("validate, wrong WSSE secret", ["validate"], s.env(emu, "wsse", EMARSYS_SECRET=s.wsse_secret + "-wrong"),
            (2,))
    control.close()
    assert len(s.tokens) >= 3, "the runs should have fetched several tokens (ttl 2 s)"

    found = {}
    for name, outcome in outcomes.items():
        for stream in ("stdout", "stderr"):
            hits = leaks(getattr(outcome, stream), s)
            if hits:
                found[f"{name} {stream}"] = hits
    for path, text in files_text(project).items():
        hits = leaks(text, s)
        if hits:
            found[path] = hits
    hits = leaks(warehouse_text(project / DATABASE), s)
    if hits:
        found["warehouse tables"] = hits
    assert not found, f"secrets found: {found}"
    # The debug logs did log the requests (so the scan looked at something real).
    assert "HTTP Request" in outcomes["run oauth"].stderr and "retrying" in outcomes["run oauth"].stderr
    assert "DEBUG" in outcomes["validate"].stderr, "the in-process commands' logs were not captured"


def test_client_objects_and_errors_carry_no_secret(secret_emulator):
    """reprs of the settings, the client and its auth; the text and traceback of the errors a wrong
    credential, a missing permission and an outage raise."""
    emu, s = secret_emulator
    texts: list[str] = []

    def capture(env: dict) -> None:
        settings = EmarsysSettings.from_env(env)
        with EmarsysClient(settings) as client:
            texts.extend([repr(settings), str(settings), repr(client), repr(client._auth)])
            try:
                client.check_connection()
            except EmarsysError as exc:
                texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
        s.remember_tokens(emu)

    capture(s.env(emu))
    capture(s.env(emu, "wsse"))
    capture(s.env(emu, EMARSYS_CLIENT_SECRET=s.client_secret + "-wrong"))
    capture(s.env(emu, "wsse", EMARSYS_SECRET=s.wsse_secret + "-wrong"))
    Control(emu).add_faults({"type": "status", "status": 503, "count": 10})
    capture(s.env(emu))
    assert any("credentials rejected" in t for t in texts) and any("503" in t for t in texts)
    hits = leaks("\n".join(texts), s)
    assert not hits, hits


# -- TLS --------------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate (Debian: apt-get install openssl)"
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


class HttpsEmulator:
    """The emulator's ASGI app served by uvicorn over TLS on a loopback port."""

    def __init__(self, key: Path, cert: Path):
        self.emulator = Emulator(EmulatorConfig(rate_limit=0))
        self._sock = bind_socket("127.0.0.1", 0)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.emulator.app, log_level="warning", lifespan="off",
                                ssl_keyfile=str(key), ssl_certfile=str(cert))
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> "HttpsEmulator":
        self._thread.start()
        while not self._server.started:
            assert self._thread.is_alive(), "the HTTPS emulator did not start"
            self._thread.join(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.emulator.close()
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def env(self, **extra: str) -> dict[str, str]:
        config = self.emulator.config
        return {"EMARSYS_API_URL": self.url, "EMARSYS_AUTH_URL": f"{self.url}/oauth2/token",
                "EMARSYS_CLIENT_ID": config.client_id, "EMARSYS_CLIENT_SECRET": config.client_secret, **extra}

    def contacts(self) -> list:
        return list(self.emulator.store.contacts.values())


# Settings that would be an off switch elsewhere; here they must change nothing.
OFF_SWITCH_LOOKALIKES = {"EMARSYS_VERIFY_SSL": "false", "EMARSYS_SSL_VERIFY": "0", "EMARSYS_TLS_VERIFY": "false",
                         "EMARSYS_INSECURE": "1", "EMARSYS_CA_BUNDLE": "", "PYTHONHTTPSVERIFY": "0",
                         "CURL_CA_BUNDLE": ""}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return _self_signed(tmp_path_factory.mktemp("tls"))


def test_tls_is_verified_and_a_ca_bundle_is_the_way_in(project, certificate):
    key, cert = certificate
    write_people(project, ok_people_rows(3))
    with HttpsEmulator(key, cert) as https:
        # The self-signed certificate is refused, with every off-switch lookalike set too: a configuration
        # error at once (retrying can't make a certificate trusted) that says what to set.
        for env in (https.env(), https.env(**OFF_SWITCH_LOOKALIKES)):
            refused = cli(project, ["run", "--select", "contacts"], env)
            assert refused.exit_code == 2 and refused.exception is None, refused.describe()
            assert "certificate verify failed" in refused.output and "EMARSYS_CA_BUNDLE" in refused.output, \
                refused.describe()
            assert "gave up after" not in refused.output, refused.describe()
            assert https.contacts() == []
        # A CA bundle that doesn't exist, or holds no certificate, is a configuration error naming the setting.
        for bundle in (str(cert) + ".missing", str(key)):
            unusable = cli(project, ["run", "--select", "contacts"], https.env(EMARSYS_CA_BUNDLE=bundle))
            assert unusable.exit_code == 2 and "EMARSYS_CA_BUNDLE" in unusable.output, unusable.describe()
            assert unusable.exception is None, unusable.describe()
        # The certificate as the CA bundle: verified, and the sync runs.
        trusted = cli(project, ["run", "--select", "contacts"], https.env(EMARSYS_CA_BUNDLE=str(cert)))
        assert trusted.exit_code == 0, trusted.describe()
        assert len(https.contacts()) == 3
        # A plain client with the bundle agrees: the server really is TLS with this certificate.
        assert httpx.get(f"{https.url}/_emulator/health", verify=str(cert)).status_code == 200


def test_no_code_turns_tls_verification_off():
    """A static check over the package: no `verify=False`, no unverified SSL context."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for pattern in (r"verify\s*=\s*False", r"CERT_NONE", r"_create_unverified_context", r"check_hostname\s*=\s*False"):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(PACKAGE)}: {pattern}")
    assert not offenders, offenders
