"""The client against the emulator over loopback, with faults injected through its control API:
429 storms, 5xx bursts, timeouts, dropped connections, expired tokens, a skewed clock and the
"already exists" race. Every key must end acknowledged, rejected or failed-retryable, never lost."""

from __future__ import annotations

import logging
import re
import threading

import pytest

from dbt_emarsys_sync.emarsys import TransientError, encode_contacts
from tests.unit.emarsys.support import messages

EMAIL = 3


def batch(prefix: str, n: int, start: int = 0) -> tuple[list[str], bytes]:
    keys = [f"{prefix}{i}@example.com" for i in range(start, start + n)]
    return keys, encode_contacts(EMAIL, [{"3": k, "1": prefix} for k in keys])


def stored_emails(emu) -> list[str]:
    return sorted(c["3"] for c in emu.get("/_emulator/contacts"))


def statuses(emu, path: str) -> list[int]:
    return [r["status"] for r in emu.requests_log() if path in r["path"]]


def send_in_threads(client, batches, threads: int = 4) -> tuple[list, list]:
    outcomes, errors = [], []
    lock = threading.Lock()
    work = list(batches)

    def worker():
        while True:
            with lock:
                if not work:
                    return
                keys, body = work.pop()
            try:
                result = client.upsert_contacts(EMAIL, keys, body, create=True)
            except Exception as exc:  # noqa: BLE001
                result = exc
            with lock:
                (errors if isinstance(result, Exception) else outcomes).append(result)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    return outcomes, errors


def test_a_429_storm_is_waited_out_and_loses_nothing(emu, caplog):
    caplog.set_level(logging.INFO)
    emu.fault(type="status", status=429, path="/contact", count=6)
    batches = [batch(f"s{n}-", 50) for n in range(10)]
    with emu.client("oauth") as client:
        outcomes, errors = send_in_threads(client, batches)
        assert not errors
        assert sum(len(o.acknowledged) for o in outcomes) == 500 and not any(o.rejected for o in outcomes)
        assert client.limiter.clock.sleeps and all(s >= 59 for s in client.limiter.clock.sleeps)
    assert statuses(emu, "/contact").count(429) == 6
    assert len(stored_emails(emu)) == 500
    assert sum("HTTP 429 rate limited" in m for m in messages(caplog)) == 6


def test_5xx_bursts_are_retried_with_backoff(emu, caplog):
    caplog.set_level(logging.INFO)
    for status, count in [(503, 3), (502, 1), (500, 2)]:
        emu.fault(type="status", status=status, path="/contact", count=count)
    keys, body = batch("b", 20)
    with emu.client("wsse") as client:
        outcome = client.upsert_contacts(EMAIL, keys, body, create=True)
    assert outcome.acknowledged == keys
    assert statuses(emu, "/contact") == [503, 503, 503, 502, 500, 500, 200]
    assert [m.split(": ", 1)[1] for m in messages(caplog) if m.startswith("retrying")][:4] == [
        "PUT /contact/: HTTP 503 replyCode 1003: Service temporarily unavailable"] * 3 + [
        "PUT /contact/: HTTP 502 replyCode 1003: Bad gateway"]


def test_a_request_that_outlasts_the_timeout_is_retried(emu):
    emu.fault(type="hang", seconds=1.5, path="/contact")
    keys, body = batch("t", 5)
    with emu.client("oauth", timeout_seconds=0.4) as client:
        outcome = client.upsert_contacts(EMAIL, keys, body, create=True)
        assert outcome.acknowledged == keys and client.retries == 1
    assert stored_emails(emu) == sorted(keys)


@pytest.mark.parametrize("fault", ["drop", "drop_after_write"])
def test_dropped_connections_are_retried_and_upserts_stay_single(emu, fault):
    emu.fault(type=fault, path="/contact", count=2)
    keys, body = batch("d", 10)
    with emu.client("oauth") as client:
        outcome = client.upsert_contacts(EMAIL, keys, body, create=True)
        assert outcome.acknowledged == keys and client.retries == 2
    assert stored_emails(emu) == sorted(keys)          # written once, even when the answer was lost


def test_a_list_created_by_an_attempt_whose_answer_was_lost_is_found_not_duplicated(emu, caplog):
    caplog.set_level(logging.INFO)
    emu.fault(type="drop_after_write", path="/contactlist", method="POST")
    with emu.client("oauth") as client:
        list_id = client.create_contact_list("Lost answer")
    lists = [lst for lst in emu.get("/_emulator/lists") if lst["name"] == "Lost answer"]
    assert [lst["id"] for lst in lists] == [list_id]
    assert any("earlier attempt whose answer was lost" in m for m in messages(caplog))


def test_a_server_that_stays_down_fails_the_batch_as_retryable(emu):
    emu.fault(type="status", status=503, path="/contact", count=100)
    keys, body = batch("x", 3)
    with emu.client("oauth") as client, pytest.raises(TransientError) as err:
        client.upsert_contacts(EMAIL, keys, body, create=True)
    assert err.value.keys == keys and "gave up after 8 attempts" in str(err.value)
    assert stored_emails(emu) == []


def test_tokens_expiring_mid_run_cost_one_refresh(emu):
    batches = [batch(f"e{n}-", 20) for n in range(12)]
    with emu.client("oauth") as client:
        outcomes, errors = send_in_threads(client, batches[:4])
        emu.post("/_emulator/tokens/expire")
        more, more_errors = send_in_threads(client, batches[4:])
        assert not errors and not more_errors
        assert client._auth.tokens_fetched == 2
    assert len(stored_emails(emu)) == 240


def test_a_skewed_server_clock_is_corrected_once_for_wsse(emu, caplog):
    caplog.set_level(logging.INFO)
    emu.settings(clock_skew=-1800)
    batches = [batch(f"k{n}-", 10) for n in range(6)]
    with emu.client("wsse") as client:
        client.get_fields()
        outcomes, errors = send_in_threads(client, batches)
    assert not errors and sum(len(o.acknowledged) for o in outcomes) == 60
    assert statuses(emu, "/field") == [401, 200] and 401 not in statuses(emu, "/contact")
    said = [re.search(r"clock is (\d+)s ahead of the Emarsys server", m) for m in messages(caplog, logging.WARNING)]
    assert [abs(int(m.group(1)) - 1800) <= 2 for m in said if m] == [True]


def test_the_already_exists_race_is_sent_again(emu, caplog):
    caplog.set_level(logging.INFO)
    emu.fault(type="already_exists", path="/contact")
    keys, body = batch("r", 5)
    with emu.client("oauth") as client:
        outcome = client.upsert_contacts(EMAIL, keys, body, create=True)
    assert sorted(outcome.acknowledged) == keys and not outcome.rejected
    assert any("already exists' race (2009)" in m for m in messages(caplog))
    assert stored_emails(emu) == keys


def test_parallel_first_requests_on_a_skewed_clock_all_recover(emu):
    # No warm-up request: several batches are signed with the wrong clock at once; whichever learns
    # the server's time first, the others re-sign with it instead of failing.
    emu.settings(clock_skew=900)
    batches = [batch(f"p{n}-", 10) for n in range(8)]
    with emu.client("wsse") as client:
        outcomes, errors = send_in_threads(client, batches, threads=8)
    assert not errors and sum(len(o.acknowledged) for o in outcomes) == 80
