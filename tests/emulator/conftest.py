"""Contract tests of the bundled Emarsys API: the emulator on a loopback port (port 0), spoken to with
a plain httpx client that signs its own requests, never the product's Emarsys client, so the
emulator is tested independently of the code it tests."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime

import httpx
import pytest

from dbt_emarsys_sync.emulator import EmulatorConfig, EmulatorThread


def wsse_header(username: str, secret: str, created: str | None = None, nonce: str | None = None) -> str:
    """The X-WSSE header exactly as emarsys-api.md §1.2 documents it."""
    nonce = nonce or secrets.token_hex(16)
    created = created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    digest = base64.b64encode(hashlib.sha1((nonce + created + secret).encode()).hexdigest().encode()).decode()
    return (f'UsernameToken Username="{username}", PasswordDigest="{digest}", '
            f'Nonce="{nonce}", Created="{created}"')


def fetch_token(http: httpx.Client, client_id: str, client_secret: str) -> str:
    response = http.post("/oauth2/token", auth=(client_id, client_secret),
                         data={"grant_type": "client_credentials"})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


class Api:
    """A plain HTTP client for one API user of the emulator: v3 with a bearer token, or v2 with WSSE.
    `http` is an httpx.Client whose base_url is the emulator (one per module: building a client costs
    ~0.1 s of TLS setup, even for plain HTTP)."""

    def __init__(self, http: httpx.Client, scheme: str, name: str, secret: str):
        self.http, self.scheme, self.name, self.secret = http, scheme, name, secret
        self.token = fetch_token(http, name, secret) if scheme == "oauth" else None

    @property
    def root(self) -> str:
        return "/api/v3" if self.scheme == "oauth" else "/api/v2"

    def headers(self) -> dict[str, str]:
        if self.scheme == "oauth":
            return {"Authorization": f"Bearer {self.token}"}
        return {"X-WSSE": wsse_header(self.name, self.secret)}

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return self.http.request(method, self.root + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json=None, **kwargs) -> httpx.Response:
        return self.request("POST", path, json=json, **kwargs)

    def put(self, path: str, json=None, **kwargs) -> httpx.Response:
        return self.request("PUT", path, json=json, **kwargs)

    def upsert(self, contacts: list[dict], key_id="3", create: bool = True) -> httpx.Response:
        return self.put(f"/contact/?create_if_not_exists={int(create)}",
                        json={"key_id": key_id, "contacts": contacts})


class Control:
    """The emulator's control API (`/_emulator/*`, no auth)."""

    def __init__(self, http: httpx.Client):
        self.http = http

    def get(self, path: str):
        response = self.http.get("/_emulator" + path)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body=None):
        response = self.http.post("/_emulator" + path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def faults(self, *faults: dict):
        return self.post("/faults", {"faults": list(faults)})

    def settings(self, **values):
        return self.post("/settings", values)

    def seed(self, **data):
        return self.post("/seed", data)


def data(response: httpx.Response):
    body = response.json()
    assert body["replyCode"] == 0, body
    return body["data"]


def reply(response: httpx.Response) -> tuple[int, int]:
    """(HTTP status, replyCode): what emarsys-api.md §2.1 says error handling keys on."""
    return response.status_code, response.json()["replyCode"]


@pytest.fixture(scope="module")
def server():
    """One emulator per test module; `emu` resets it before each test."""
    with EmulatorThread(EmulatorConfig(rate_limit=0)) as thread:
        yield thread


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def emu(server, http):
    http.post("/_emulator/reset").raise_for_status()
    return server


@pytest.fixture
def control(emu, http):
    return Control(http)


@pytest.fixture(params=["oauth", "wsse"])
def api(request, emu, http):
    """The default API user over v3 (OAuth) and over v2 (WSSE)."""
    config = emu.emulator.config
    if request.param == "oauth":
        return Api(http, "oauth", config.client_id, config.client_secret)
    return Api(http, "wsse", config.username, config.secret)


@pytest.fixture
def v3(emu, http):
    config = emu.emulator.config
    return Api(http, "oauth", config.client_id, config.client_secret)


@pytest.fixture
def v2(emu, http):
    config = emu.emulator.config
    return Api(http, "wsse", config.username, config.secret)
