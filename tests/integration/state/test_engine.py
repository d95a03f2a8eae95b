"""The engine against the emulator over loopback HTTP, with its state in DuckDB and in PostgreSQL: the
three behaviours, what a second run sends, rejected rows, the mirror's safety limits, dry runs and a
request that fails for good halfway through."""

from __future__ import annotations

import httpx
import pytest

from dbt_emarsys_sync.emarsys import EmarsysClient, EmarsysSettings, FieldCatalog, RetryPolicy
from dbt_emarsys_sync.emulator import EmulatorConfig, EmulatorThread
from dbt_emarsys_sync.engine import Engine, EngineOptions, RunOptions

COLUMNS = {"email": "varchar(200)", "first_name": "varchar(100)", "tier": "varchar(20)"}
FIELDS = {"first_name": "first_name", "tier": "Loyalty Tier"}


def people(n: int, start: int = 0, tier: str = "Gold") -> list[tuple]:
    return [(f"person{i}@example.com", f"Person {i}", tier) for i in range(start, start + n)]


@pytest.fixture
def emu():
    with EmulatorThread(EmulatorConfig(rate_limit=0)) as server:
        yield server


def client_for(emu, attempts: int = 3) -> EmarsysClient:
    config = emu.emulator.config
    settings = EmarsysSettings(api_url=emu.url, scheme="oauth", auth_url=emu.token_url,
                               client_id=config.client_id, client_secret=config.client_secret,
                               rate_limit_per_minute=0, timeout_seconds=10)
    return EmarsysClient(settings, retry=RetryPolicy(attempts=attempts, timeout_seconds=20, wait_initial=0.01,
                                                     wait_max=0.05, wait_jitter=0.0))


def sync_once(warehouse, emu, sync, *, options: EngineOptions | None = None, **run_options):
    """One run of one sync, as the runner does it: plan, then (when there is work) prepare and send."""
    job = warehouse.job(sync)
    engine = Engine(warehouse.source, options or EngineOptions(add_retry_waits=(0.05, 0.2)),
                    RunOptions(**run_options))
    with client_for(emu) as client:
        if run_options.get("dry_run"):
            catalog = FieldCatalog.from_api(client.get_fields(), choice_loader=client.get_choices)
            engine.preview(job, client, catalog)
            return job.report
        warehouse.source.store.migrate()
        engine.plan(job, client)
        if job.needs_sending:
            engine.prepare(job, FieldCatalog.from_api(client.get_fields(), choice_loader=client.get_choices))
            engine.send(job, client)
    return job.report


def contacts(emu) -> dict[str, dict]:
    return {c["3"]: c for c in httpx.get(f"{emu.url}/_emulator/contacts").json() if c.get("3")}


def list_members(emu, name: str) -> set[str]:
    for item in httpx.get(f"{emu.url}/_emulator/lists").json():
        if item["name"] == name:
            return set(item["emails"])
    return set()


def writes(emu) -> list[dict]:
    return [r for r in httpx.get(f"{emu.url}/_emulator/requests").json()
            if r["method"] in ("PUT", "POST") and "/api/" in r["path"] and "getdata" not in r["path"]
            and "checkids" not in r["path"]]


def contact_sync(warehouse, rows, **spec):
    relation = warehouse.table(COLUMNS, rows)
    spec.setdefault("fields", FIELDS)
    return relation, warehouse.sync(relation, **spec)


# -- contacts --------------------------------------------------------------------------------------


def test_update_or_create_sends_only_what_changed(warehouse, emu):
    relation, sync = contact_sync(warehouse, people(30) + [("not-an-email", "X", "Gold"), ("p@example.com", "Y", "Tin")])
    first = sync_once(warehouse, emu, sync, options=EngineOptions(max_batch_contacts=7))
    assert (first.status, first.sent, first.created, first.acknowledged) == ("rejected_rows", 30, 30, 30)
    assert first.rejected_by_code == {"invalid_key": 1, "mapping": 1}      # "Tin" is not a tier
    assert len(contacts(emu)) == 30 and contacts(emu)["person7@example.com"]["1"] == "Person 7"

    second = sync_once(warehouse, emu, sync)
    assert (second.sent, second.api_requests, second.unchanged) == (0, 0, 30)
    assert second.rejected == 2          # rejected rows are tried again (and rejected again)

    rows = people(30)
    rows[4] = ("PERSON4@example.com ", "Renamed", "Gold")
    warehouse.replace_rows(relation, COLUMNS, rows)
    third = sync_once(warehouse, emu, sync)
    assert (third.sent, third.updated, third.unchanged, third.status) == (1, 1, 29, "success")
    assert contacts(emu)["person4@example.com"]["1"] == "Renamed"
    assert sync_once(warehouse, emu, sync).sent == 0


def test_update_only_rejects_rows_without_a_contact_instead_of_creating_them(warehouse, emu):
    _, creator = contact_sync(warehouse, people(3))
    sync_once(warehouse, emu, creator)
    _, updater = contact_sync(warehouse, [(e, "Updated", t) for e, _, t in people(5)], behaviour="update_only")
    report = sync_once(warehouse, emu, updater)
    assert (report.updated, report.created, report.rejected) == (3, 0, 2)
    assert report.rejected_by_code == {"2008": 2}
    assert set(contacts(emu)) == {f"person{i}@example.com" for i in range(3)}
    assert all(c["1"] == "Updated" for c in contacts(emu).values())


def test_update_only_by_emarsys_contact_id(warehouse, emu):
    _, creator = contact_sync(warehouse, people(2))
    sync_once(warehouse, emu, creator)
    ids = {email: c["id"] for email, c in contacts(emu).items()}
    relation = warehouse.table({"contact_id": "bigint", "first_name": "varchar(100)"},
                               [(ids["person0@example.com"], "By Id"), (999999, "Nobody")])
    sync = warehouse.sync(relation, behaviour="update_only", key={"column": "contact_id", "field": "id"},
                          fields={"first_name": "first_name"})
    report = sync_once(warehouse, emu, sync)
    assert (report.updated, report.rejected, report.created) == (1, 1, 0)
    assert contacts(emu)["person0@example.com"]["1"] == "By Id"


def test_a_request_failing_for_good_keeps_what_was_acknowledged(warehouse, emu):
    relation, sync = contact_sync(warehouse, people(50))
    # Batches of 10, one request at a time: two pass (a "slow" fault of 0 seconds is a normal answer),
    # then the third upsert and every retry of it fail.
    httpx.post(f"{emu.url}/_emulator/faults", json={"faults": [
        {"type": "slow", "seconds": 0, "count": 2, "path": "/contact", "method": "PUT"},
        {"type": "status", "status": 503, "count": 100, "path": "/contact", "method": "PUT"}]})
    options = EngineOptions(max_batch_contacts=10, in_flight=1)
    report = sync_once(warehouse, emu, sync, options=options)
    httpx.delete(f"{emu.url}/_emulator/faults")
    assert (report.status, report.acknowledged, report.failed_retryable) == ("failed", 20, 10)
    assert "sent again on the next run" in report.message or "gave up" in report.message
    acknowledged = report.acknowledged
    # The next run sends exactly what wasn't acknowledged.
    again = sync_once(warehouse, emu, sync, options=options)
    assert (again.sent, again.status) == (50 - acknowledged, "success")
    assert len(contacts(emu)) == 50


def test_decimals_reach_emarsys_with_every_digit_as_the_value_by_value_path_writes_them(warehouse, emu):
    """Plans hand a numeric field its decimal column as text where the warehouse casts decimals to plain
    text (DuckDB, PostgreSQL): Emarsys gets exactly what coercing the Decimal gives, scale kept; a
    number over Emarsys's 24 digits is still rejected; a decimal mapped to a text field is unaffected."""
    from decimal import Decimal

    from dbt_emarsys_sync.emarsys.fields import coerce

    values = ["12.50", "-0.50", "0.00", "7.00", "-12345678901234567890.12", "99999999999999999999999.00",
              "1234567890123456789012345.00", None]
    rows = [(f"d{i}@example.com", v, v) for i, v in enumerate(values)]
    relation = warehouse.table({"email": "varchar(200)", "ltv": "decimal(30,2)", "note": "decimal(30,2)"}, rows)
    sync = warehouse.sync(relation, fields={"ltv": "lifetime_value", "note": "first_name"})
    # Two rows a request: a column of plain values (the first four rows) and one with values the
    # text fast path leaves to the value-by-value path.
    report = sync_once(warehouse, emu, sync, options=EngineOptions(max_batch_contacts=2))
    assert (report.acknowledged, report.rejected) == (7, 1)
    assert "more than 24 digits" in report.rejected_samples[0]["reason"]
    with client_for(emu) as client:
        catalog = FieldCatalog.from_api(client.get_fields(), choice_loader=client.get_choices)
    for i, value in enumerate(values[:6]):
        sent = contacts(emu)[f"d{i}@example.com"]
        decimal = Decimal(value)
        assert sent["5001"] == coerce(decimal, catalog.resolve("lifetime_value"))
        assert sent["1"] == coerce(decimal, catalog.resolve("first_name"))
    assert contacts(emu)["d0@example.com"]["5001"] == "12.50" and contacts(emu)["d2@example.com"]["5001"] == "0.00"


# -- mirror ----------------------------------------------------------------------------------------


def mirror_sync(warehouse, rows, **spec):
    relation = warehouse.table(COLUMNS, rows)
    spec = {"object": "contact_list", "behaviour": "mirror", "list": "VIP", "fields": {}, **spec}
    return relation, warehouse.sync(relation, **spec)


def test_mirror_creates_the_list_and_adds_then_removes_only_who_changed(warehouse, emu):
    relation, sync = mirror_sync(warehouse, people(10))
    first = sync_once(warehouse, emu, sync)
    assert (first.status, first.added, first.created) == ("success", 10, 10)
    assert list_members(emu, "VIP") == {f"person{i}@example.com" for i in range(10)}

    warehouse.replace_rows(relation, COLUMNS, people(9, start=1) + people(1, start=20))
    second = sync_once(warehouse, emu, sync)
    assert (second.added, second.removed, second.unchanged) == (1, 1, 9)
    assert list_members(emu, "VIP") == {f"person{i}@example.com" for i in list(range(1, 10)) + [20]}
    assert "person0@example.com" in contacts(emu)      # removed from the list, never deleted
    assert sync_once(warehouse, emu, sync).api_requests == 0


def test_mirror_counts_as_added_only_keys_that_were_not_members(warehouse, emu):
    relation, sync = mirror_sync(warehouse, people(10), fields=FIELDS)
    assert sync_once(warehouse, emu, sync).added == 10
    # Three members' values change and two people join: the three are sent again (contact upsert and
    # list add), but only the two are new members.
    warehouse.replace_rows(relation, COLUMNS, people(3, tier="Silver") + people(7, start=3) + people(2, start=50))
    again = sync_once(warehouse, emu, sync)
    assert (again.status, again.sent, again.added, again.removed) == ("success", 5, 2, 0), again.message
    assert len(list_members(emu, "VIP")) == 12


def test_mirror_refuses_mass_removal_and_an_empty_model_with_the_numbers(warehouse, emu):
    relation, sync = mirror_sync(warehouse, people(10))
    sync_once(warehouse, emu, sync)
    warehouse.replace_rows(relation, COLUMNS, people(7))
    refused = sync_once(warehouse, emu, sync)
    assert refused.status == "failed"
    assert "refusing to remove 3 of the 10 members of list 'VIP' in one run (30.0%; the limit is 20%" \
        in refused.message
    assert len(list_members(emu, "VIP")) == 10

    warehouse.replace_rows(relation, COLUMNS, [])
    empty = sync_once(warehouse, emu, sync)
    assert empty.status == "failed" and "refusing to mirror an empty model" in empty.message
    assert "remove all 10 members" in empty.message and len(list_members(emu, "VIP")) == 10

    warehouse.replace_rows(relation, COLUMNS, people(7))
    allowed = sync_once(warehouse, emu, sync, allow_mass_removal=True)
    assert (allowed.status, allowed.removed) == ("success", 3)
    assert len(list_members(emu, "VIP")) == 7


def test_mirror_safety_share_is_configurable_per_sync(warehouse, emu):
    relation, sync = mirror_sync(warehouse, people(10), safety={"max_removal_share": 0.5})
    sync_once(warehouse, emu, sync)
    warehouse.replace_rows(relation, COLUMNS, people(6))
    assert sync_once(warehouse, emu, sync).removed == 4


def test_mirror_full_refresh_reconciles_with_the_real_members(warehouse, emu):
    # Emarsys documents the member listing (contactIds) on API v2; this account serves it on v3 too.
    httpx.post(f"{emu.url}/_emulator/settings", json={"v3_contact_ids": True})
    relation, sync = mirror_sync(warehouse, people(10))
    sync_once(warehouse, emu, sync)
    # Someone adds a member by hand in Emarsys; the sync's state doesn't know it.
    httpx.post(f"{emu.url}/_emulator/seed", json={"contacts": [{"3": "intruder@example.com"}]})
    # And takes one off by hand: the state still holds it as a member.
    with client_for(emu) as client:
        list_id = client.find_contact_list("VIP").id
        client.add_to_list(list_id, 3, ["intruder@example.com"])
        client.remove_from_list(list_id, 3, ["person0@example.com"])
    assert sync_once(warehouse, emu, sync).sent == 0
    refreshed = sync_once(warehouse, emu, sync, full_refresh=True)
    # Counted against what the list really held: the one taken off is added again, the nine others
    # were members already.
    assert (refreshed.status, refreshed.removed, refreshed.added) == ("success", 1, 1), refreshed.message
    assert list_members(emu, "VIP") == {f"person{i}@example.com" for i in range(10)}


def test_a_mirror_whose_list_is_gone_from_emarsys_refuses_until_a_full_refresh(warehouse, emu):
    httpx.post(f"{emu.url}/_emulator/settings", json={"v3_contact_ids": True})
    relation, sync = mirror_sync(warehouse, people(5))
    sync_once(warehouse, emu, sync)
    # The declaration now names another list: the state's members are on 'VIP', not on it.
    renamed = warehouse.sync(relation, **{**sync.spec.model_dump(), "list": "VIP 2"})
    before = len(writes(emu))
    refused = sync_once(warehouse, emu, renamed)
    assert refused.status == "failed"
    assert "Emarsys has no contact list named 'VIP 2', but the state holds 5 members" in refused.message
    assert "--full-refresh" in refused.message
    assert len(writes(emu)) == before             # nothing sent: no list created, no contact written
    assert list_members(emu, "VIP") == {f"person{i}@example.com" for i in range(5)}
    filled = sync_once(warehouse, emu, renamed, full_refresh=True)
    assert (filled.status, filled.added) == ("success", 5), filled.message
    assert list_members(emu, "VIP 2") == {f"person{i}@example.com" for i in range(5)}
    assert sync_once(warehouse, emu, renamed).api_requests == 0


def test_mirror_full_refresh_fails_clearly_when_the_members_cannot_be_read(warehouse, emu):
    _, sync = mirror_sync(warehouse, people(3))
    sync_once(warehouse, emu, sync)
    before = len(writes(emu))
    refreshed = sync_once(warehouse, emu, sync, full_refresh=True)
    assert refreshed.status == "failed"
    assert "full refresh of list 'VIP'" in refreshed.message and "contactIds" in refreshed.message
    assert len(writes(emu)) == before


# -- dry run ---------------------------------------------------------------------------------------


def test_dry_run_counts_and_samples_without_writing_anything(warehouse, emu):
    relation, sync = contact_sync(warehouse, people(5) + [("bad", "X", "Gold")])
    state_schema = warehouse.source.store.schema
    planned = sync_once(warehouse, emu, sync, dry_run=True, samples=2)
    assert (planned.status, planned.planned_new, planned.rejected) == ("planned", 5, 1)
    assert (planned.would_create, planned.would_update) == (5, 0)
    samples = planned.samples["new"]
    assert len(samples) == 2 and {s["key"] for s in samples} <= {f"person{i}@example.com" for i in range(5)}
    assert samples[0]["first_name"].startswith("Person ")
    assert writes(emu) == [] and contacts(emu) == {}
    assert not warehouse.wh.table_exists(state_schema, "sync_snapshot") or \
        warehouse.wh.fetch(f"select count(*) from {warehouse.source.store.snapshot} "
                           f"where sync_name = '{sync.name}'") == [(0,)]

    sync_once(warehouse, emu, sync)
    warehouse.replace_rows(relation, COLUMNS, people(4) + [("person9@example.com", "New", "Gold")])
    again = sync_once(warehouse, emu, sync, dry_run=True)
    assert (again.planned_new, again.planned_changed, again.unchanged, again.departed) == (1, 0, 4, 1)
