"""The two reference clients the runner is measured against, each run as its own process by run.py.

    python bench/loops.py limit  --db FILE --url URL [--connections 4]
    python bench/loops.py naive  --db FILE --url URL

limit: every contact pre-encoded into 1000-contact request bodies before the clock starts, then posted
       as fast as a bare httpx loop can with a few concurrent connections: the most any client gets
       from this emulator on this machine.
naive: what a data engineer might write in an afternoon: read the whole table with duckdb, build a
       dict per row, post 1000-contact batches one after the other. No state, no generic coercion
       (just the three conversions Emarsys insists on), no retries.

Each prints one JSON line: seconds, contacts, requests, bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import httpx
import orjson

CLIENT = ("sandbox-client", "sandbox-client-secret")
QUERY = ("select email, first_name, last_name, birth_date, lifetime_value, optin, loyalty_tier, "
         "signed_up_at from bench_contacts")
TIERS = {"Bronze": 1, "Silver": 2, "Gold": 3, "Platinum": 4}


def token(url: str) -> str:
    response = httpx.post(f"{url}/oauth2/token", data={"grant_type": "client_credentials"}, auth=CLIENT)
    response.raise_for_status()
    return response.json()["access_token"]


def contact(row) -> dict:
    email, first, last, birth, ltv, optin, tier, signed_up = row
    return {"3": email, "1": first, "2": last, "4": birth.isoformat(), "5001": str(ltv),
            "31": 1 if optin else 2, "5003": TIERS[tier], "5004": signed_up.date().isoformat()}


def limit(db: str, url: str, connections: int) -> dict:
    con = duckdb.connect(db, read_only=True)
    rows = con.execute(QUERY).fetchall()
    con.close()
    bodies = [orjson.dumps({"key_id": "3", "contacts": [contact(r) for r in rows[i:i + 1000]]})
              for i in range(0, len(rows), 1000)]
    del rows
    headers = {"Authorization": f"Bearer {token(url)}", "Content-Type": "application/json"}
    clients = [httpx.Client(base_url=url, headers=headers, timeout=120) for _ in range(connections)]

    def post(i: int) -> None:
        r = clients[i % connections].put("/api/v3/contact/?create_if_not_exists=1", content=bodies[i])
        r.raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(post, range(len(bodies))))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "contacts": sum(b.count(b'"3":') for b in bodies),
            "requests": len(bodies), "bytes": sum(len(b) for b in bodies)}


def naive(db: str, url: str) -> dict:
    start = time.perf_counter()
    con = duckdb.connect(db, read_only=True)
    cur = con.execute(QUERY)
    names = [d[0] for d in cur.description]
    records = [dict(zip(names, row)) for row in cur.fetchall()]
    con.close()
    client = httpx.Client(base_url=url, timeout=120,
                          headers={"Authorization": f"Bearer {token(url)}"})
    requests = sent_bytes = 0
    for i in range(0, len(records), 1000):
        batch = [{"3": r["email"], "1": r["first_name"], "2": r["last_name"], "4": str(r["birth_date"]),
                  "5001": str(r["lifetime_value"]), "31": 1 if r["optin"] else 2,
                  "5003": TIERS[r["loyalty_tier"]], "5004": str(r["signed_up_at"].date())}
                 for r in records[i:i + 1000]]
        body = json.dumps({"key_id": "3", "contacts": batch}).encode()
        client.put("/api/v3/contact/?create_if_not_exists=1", content=body,
                   headers={"Content-Type": "application/json"}).raise_for_status()
        requests += 1
        sent_bytes += len(body)
    return {"seconds": time.perf_counter() - start, "contacts": len(records), "requests": requests,
            "bytes": sent_bytes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["limit", "naive"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    result = limit(args.db, args.url, args.connections) if args.mode == "limit" else naive(args.db, args.url)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
