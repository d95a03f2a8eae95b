"""How many contacts per second the bundled Emarsys API accepts in 1000-contact upsert batches.

The emulator runs as its own process (`dbt-emarsys-sync emulator --port 0 --rate-limit 0`), as a user
starts it; this process is a plain httpx client posting pre-encoded batches over a few concurrent
keep-alive connections on loopback. Client and server share the machine, as they do in the
benchmarks and tests that use the emulator.

    python bench/emulator_ingest.py                       # 300 batches, 4 connections
    python bench/emulator_ingest.py --batches 500 --connections 8

Two passes: the first creates every contact, the second updates all of them (the same keys, new
values). Prints contacts/s for each. Not a test: run it by hand or from the benchmark suite.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import psutil

BATCH = 1000
COUNTRIES = 21    # choice ids of field 14 in the emulator
TIERS = 4         # choice ids of loyalty_tier (5003)


def batch_body(batch_no: int, generation: int) -> bytes:
    """One pre-encoded PUT /contact body: 1000 contacts with 9 fields each."""
    contacts = []
    for i in range(BATCH):
        n = batch_no * BATCH + i
        contacts.append({
            "3": f"customer{n}@example.com",
            "1": f"First{n % 997}",
            "2": f"Last{(n * 7) % 1009}-{generation}",
            "4": f"19{50 + n % 50}-{1 + n % 12:02d}-{1 + n % 28:02d}",
            "14": str(1 + n % COUNTRIES),
            "31": 1 if n % 3 else 2,
            "5001": f"{(n % 100000) / 100:.2f}",
            "5002": f"C-{n}",
            "5003": str(1 + (n + generation) % TIERS),
        })
    return orjson.dumps({"key_id": "3", "contacts": contacts})


def start_emulator() -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).parent / "dbt-emarsys-sync"
    proc = subprocess.Popen([str(exe), "emulator", "--port", "0", "--rate-limit", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    for line in proc.stdout:
        match = re.search(r"Emarsys emulator on (http://[\d.]+:\d+)", line)
        if match:
            url = match.group(1)
            break
    else:
        raise SystemExit(f"the emulator did not start (exit {proc.wait()})")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain its output
    with httpx.Client() as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                http.get(f"{url}/_emulator/health")
                return proc, url
            except httpx.TransportError:
                time.sleep(0.05)
    proc.kill()
    raise SystemExit("the emulator never answered its health check")


def run_pass(url: str, token: str, bodies: list[bytes], connections: int) -> tuple[float, int]:
    """Send every body with `connections` concurrent clients; returns (seconds, contacts accepted)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    accepted = 0
    lock = threading.Lock()
    clients = [httpx.Client(base_url=url, headers=headers, timeout=120) for _ in range(connections)]

    def send(job: tuple[int, bytes]) -> None:
        nonlocal accepted
        n, body = job
        response = clients[n % connections].put("/api/v3/contact/?create_if_not_exists=1", content=body)
        payload = response.json()
        if response.status_code != 200 or payload["replyCode"] != 0 or payload["data"]["errors"]:
            raise SystemExit(f"batch {n} failed: HTTP {response.status_code} {str(payload)[:300]}")
        with lock:
            accepted += len(payload["data"]["ids"])

    for client in clients:   # open the connections before timing
        client.get("/_emulator/health")
    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(send, enumerate(bodies)))
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    return elapsed, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300, help="1000-contact batches per pass")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()

    print(f"encoding {args.batches} batches of {BATCH} contacts ...", flush=True)
    creates = [batch_body(n, 0) for n in range(args.batches)]
    updates = [batch_body(n, 1) for n in range(args.batches)]
    proc, url = start_emulator()
    try:
        with httpx.Client(base_url=url) as http:
            token = http.post("/oauth2/token", auth=("sandbox-client", "sandbox-client-secret"),
                              data={"grant_type": "client_credentials"}).json()["access_token"]
        size = sum(map(len, creates)) / len(creates) / 1024
        print(f"emulator {url}; {args.connections} connections; {size:.0f} KiB per batch")
        server, client = psutil.Process(proc.pid), psutil.Process()
        for label, bodies in (("create", creates), ("update", updates)):
            server_cpu, client_cpu = sum(server.cpu_times()[:2]), sum(client.cpu_times()[:2])
            elapsed, accepted = run_pass(url, token, bodies, args.connections)
            server_cpu = sum(server.cpu_times()[:2]) - server_cpu
            client_cpu = sum(client.cpu_times()[:2]) - client_cpu
            # CPU seconds tell what the emulator costs whatever else the machine is doing.
            print(f"{label}: {accepted:,} contacts in {elapsed:.2f} s = {accepted / elapsed:,.0f} contacts/s "
                  f"(emulator CPU {server_cpu:.2f} s = {accepted / server_cpu:,.0f} contacts per CPU-second; "
                  f"client CPU {client_cpu:.2f} s; load average {os.getloadavg()[0]:.1f})")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
