"""The two reference clients the runner is measured against, each run as its own process by run.py.

    python bench/loops.py limit  --db FILE --url URL [--connections 4]
    python bench/loops.py naive  --db FILE --url URL
    python bench/loops.py client --db FILE --url URL [--connections 4]   (EMARSYS_* settings from the env)

limit: every contact pre-encoded into 1000-contact request bodies before the clock starts, then posted
       as fast as a bare httpx loop can with a few concurrent connections: the most any client gets
       from this emulator on this machine.
naive: what a data engineer might write in an afternoon: read the whole table with duckdb, build a
       dict per row, post 1000-contact batches one after the other. No state, no generic coercion
       (just the three conversions Emarsys insists on), no retries.
client: the limit loop's bodies sent through the product's EmarsysClient (auth, rate limiter, key
       guard, retries, per-key outcomes) from as many threads as the engine keeps in flight: what the
       client costs on top of bare httpx.

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


def encoded_batches(db: str) -> tuple[list[list[str]], list[bytes]]:
    """Every contact of the model, pre-encoded into 1000-contact bodies, with each body's keys."""
    con = duckdb.connect(db, read_only=True)
    rows = con.execute(QUERY).fetchall()
    con.close()
    keys = [[r[0] for r in rows[i:i + 1000]] for i in range(0, len(rows), 1000)]
    bodies = [orjson.dumps({"key_id": "3", "contacts": [contact(r) for r in rows[i:i + 1000]]})
              for i in range(0, len(rows), 1000)]
    return keys, bodies


def limit(db: str, url: str, connections: int) -> dict:
    _, bodies = encoded_batches(db)
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


def through_client(db: str, connections: int) -> dict:
    from dbt_emarsys_sync.emarsys import EmarsysClient
    from dbt_emarsys_sync.emarsys.settings import EmarsysSettings

    keys, bodies = encoded_batches(db)
    acknowledged = rejected = 0
    with EmarsysClient(EmarsysSettings.from_env()) as client:
        client.check_connection()   # the token, outside the clock as the limit loop's is

        def post(i: int):
            return client.upsert_contacts("3", keys[i], bodies[i], create=True)

        start = time.perf_counter()
        with ThreadPoolExecutor(connections) as pool:
            for outcome in pool.map(post, range(len(bodies))):
                acknowledged += len(outcome.acknowledged)
                rejected += len(outcome.rejected)
        seconds = time.perf_counter() - start
        requests = client.requests_sent - 1
    if rejected or acknowledged != sum(len(k) for k in keys):
        raise SystemExit(f"client: {acknowledged} acknowledged, {rejected} rejected")
    return {"seconds": seconds, "contacts": acknowledged, "requests": requests,
            "bytes": sum(len(b) for b in bodies)}


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
    parser.add_argument("mode", choices=["limit", "naive", "client"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if args.mode == "limit":
        result = limit(args.db, args.url, args.connections)
    elif args.mode == "client":
        result = through_client(args.db, args.connections)
    else:
        result = naive(args.db, args.url)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
