"""The client from many threads: a key never rides in two requests in flight at once, and counters
stay exact."""

from __future__ import annotations

import threading
import time

import httpx
import orjson

from dbt_emarsys_sync.emarsys import encode_contacts


class KeysInFlight(httpx.BaseTransport):
    """Passes requests on; notes any contact key that is in two requests at the same moment."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner
        self.active: dict[str, int] = {}
        self.overlaps: list[str] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        keys = []
        if request.method == "PUT":
            keys = [c["3"] for c in orjson.loads(request.read())["contacts"]]
        with self.lock:
            for k in keys:
                self.active[k] = self.active.get(k, 0) + 1
                if self.active[k] > 1:
                    self.overlaps.append(k)
        try:
            time.sleep(0.003)     # widen the window in which requests overlap
            return self.inner.handle_request(request)
        finally:
            with self.lock:
                for k in keys:
                    self.active[k] -= 1

    def close(self) -> None:
        self.inner.close()


def test_a_key_is_never_in_two_requests_in_flight(emu):
    transport = KeysInFlight(emu.transport or httpx.HTTPTransport())
    batches = [[f"p{(i + j) % 10}@example.com" for j in range(3)] for i in range(30)]
    errors: list[Exception] = []
    with emu.client("oauth", transport=transport) as client:
        client.get_fields()          # the token first, so threads don't all start on it

        def send(keys):
            try:
                outcome = client.upsert_contacts(3, keys, encode_contacts(3, [{"3": k} for k in keys]), True)
                assert sorted(outcome.acknowledged) == sorted(keys)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors and transport.overlaps == []
        assert client.key_guard.waits > 0                    # the guard did hold some back
        assert client.requests_sent == 31 and client.key_guard.in_flight(3) == set()
