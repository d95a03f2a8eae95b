"""In-process use (contracts item 1): `Emulator.sync_transport()` and `Emulator.async_transport()` run
the ASGI app without sockets, and turn connection faults and client timeouts into httpx's errors as a
socket would."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from dbt_emarsys_sync.emulator import Emulator, EmulatorConfig

TOKEN_FORM = {"grant_type": "client_credentials"}


def bearer(client: httpx.Client, emulator: Emulator) -> dict[str, str]:
    config = emulator.config
    token = client.post("/oauth2/token", auth=(config.client_id, config.client_secret), data=TOKEN_FORM)
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def test_sync_transport_serves_the_api_and_the_control_routes():
    emulator = Emulator(EmulatorConfig(rate_limit=0))
    with httpx.Client(transport=emulator.sync_transport(), base_url="http://emarsys.invalid") as client:
        headers = bearer(client, emulator)
        response = client.put("/api/v3/contact/?create_if_not_exists=1", headers=headers,
                              json={"key_id": "3", "contacts": [{"3": "a@x.com"}]})
        assert response.json()["replyCode"] == 0 and "date" in response.headers
        assert client.get("/_emulator/contacts").json()[0]["3"] == "a@x.com"


def test_one_transport_serves_several_clients_in_turn():
    """Closing a client closes its transport; the next client on the same transport still works."""
    emulator = Emulator(EmulatorConfig(rate_limit=0))
    transport = emulator.sync_transport()
    for _ in range(3):
        with httpx.Client(transport=transport, base_url="http://e") as client:
            assert client.get("/_emulator/health").json() == {"status": "ok"}


def test_sync_transport_maps_drop_and_read_timeouts_to_httpx_errors():
    emulator = Emulator(EmulatorConfig(rate_limit=0, faults=[
        {"type": "drop", "path": "/field"}, {"type": "hang", "seconds": 0.5, "method": "PUT"}]))
    with httpx.Client(transport=emulator.sync_transport(), base_url="http://e") as client:
        headers = bearer(client, emulator)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/api/v3/field", headers=headers)
        with pytest.raises(httpx.ReadTimeout):
            client.put("/api/v3/contact/?create_if_not_exists=1", headers=headers, timeout=0.1,
                       json={"key_id": "3", "contacts": [{"3": "late@x.com"}]})
        # The app carried on: the write lands once the hang is over.
        deadline = time.monotonic() + 10
        while not client.get("/_emulator/contacts").json() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [c["3"] for c in client.get("/_emulator/contacts").json()] == ["late@x.com"]


def test_async_transport_serves_and_maps_drop_after_write():
    emulator = Emulator(EmulatorConfig(rate_limit=0, faults=[{"type": "drop_after_write", "method": "PUT"}]))

    async def scenario() -> list[dict]:
        async with httpx.AsyncClient(transport=emulator.async_transport(), base_url="http://e") as client:
            config = emulator.config
            token = await client.post("/oauth2/token", auth=(config.client_id, config.client_secret),
                                      data=TOKEN_FORM)
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            with pytest.raises(httpx.RemoteProtocolError):
                await client.put("/api/v3/contact/?create_if_not_exists=1", headers=headers,
                                 json={"key_id": "3", "contacts": [{"3": "a@x.com"}]})
            return (await client.get("/_emulator/contacts")).json()

    assert [c["3"] for c in asyncio.run(scenario())] == ["a@x.com"]
