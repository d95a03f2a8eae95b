"""A sync's life on the sample dbt project, through the CLI as a user runs it: the first run creates
everything, the second sends nothing, an edited seed sends exactly that contact, a customer leaving the
VIP audience leaves the list, an empty audience is refused, and a run killed with SIGKILL at any point
converges on the next run to exactly the model's state."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from dbt_emarsys_sync.engine import EngineOptions
from tests.conftest import BIN, emulator_env, run_cli, run_dbt

pytestmark = pytest.mark.e2e

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SEED = Path("seeds") / "raw_customers.csv"


def results(project: Path) -> dict[str, dict]:
    artifact = json.loads((project / "target" / "emarsys_sync_results.json").read_text())
    return {r["name"]: r for r in artifact["results"]}


def model_keys(project: Path, model: str) -> set[str]:
    con = duckdb.connect(str(project / "target" / "sample_shop.duckdb"), read_only=True)
    try:
        emails = [r[0] for r in con.execute(f"select email from main.{model}").fetchall()]
    finally:
        con.close()
    keys = [e.strip().lower() for e in emails if e is not None]
    return {k for k in keys if EMAIL.match(k) and keys.count(k) == 1}


def emulator_contacts(emu) -> dict[str, dict]:
    return {c["3"]: c for c in httpx.get(f"{emu.url}/_emulator/contacts").json()}


def vip_members(emu) -> set[str]:
    for item in httpx.get(f"{emu.url}/_emulator/lists").json():
        if item["name"] == "VIP customers":
            return set(item["emails"])
    return set()


def edit_seed(project: Path, edit) -> None:
    """Rewrite the seed with `edit(rows)` applied, then rebuild the project."""
    path = project / SEED
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    edit(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    run_dbt(["build"], cwd=project)


def vip_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if float(r["lifetime_value"]) >= 20000 and r["marketing_opt_in"] == "true"
            and EMAIL.match(r["email"].strip().lower())]


def test_change_detection_through_the_cli(sample_project, emulator):
    env = emulator_env(emulator)
    first = run_cli(["run"], cwd=sample_project, env=env)
    assert first.returncode == 1, first.output            # the sample's invalid emails are rejected
    contacts_keys = model_keys(sample_project, "emarsys_contacts")
    vip_keys = model_keys(sample_project, "vip_customers")
    report = results(sample_project)
    # Both syncs run at once (the profile's 4 threads); the VIPs are contacts too, created by either.
    assert report["shop_contacts"]["acknowledged"] == len(contacts_keys) == len(emulator_contacts(emulator))
    assert report["vip_list"]["added"] == len(vip_keys) and vip_members(emulator) == vip_keys
    # The results file names each sync's run as the state's run history does.
    con = duckdb.connect(str(sample_project / "target" / "sample_shop.duckdb"), read_only=True)
    try:
        runs = dict(con.execute("select run_id, status from main_emarsys_sync.sync_runs").fetchall())
    finally:
        con.close()
    assert len(report) == 2 and all(runs[r["run_id"]] == r["status"] for r in report.values()), (report, runs)
    # The two syncs and the field catalogue share one OAuth token.
    tokens = [r for r in httpx.get(f"{emulator.url}/_emulator/requests").json() if r["path"] == "/oauth2/token"]
    assert len(tokens) == 1, tokens

    second = run_cli(["run"], cwd=sample_project, env=env)
    assert second.returncode == 1, second.output
    for name, result in results(sample_project).items():
        assert (result["sent"], result["api_requests"]) == (0, 0), name
    assert results(sample_project)["shop_contacts"]["unchanged"] == len(contacts_keys)

    # One customer's first name changes: that contact, and nothing else, is sent.
    changed: dict = {}

    def rename(rows):
        row = next(r for r in rows if EMAIL.match(r["email"].strip().lower()) and r not in vip_rows(rows))
        row["first_name"] = "Renamed"
        changed["email"] = row["email"].strip().lower()

    edit_seed(sample_project, rename)
    third = run_cli(["run"], cwd=sample_project, env=env)
    assert third.returncode == 1, third.output
    report = results(sample_project)
    assert (report["shop_contacts"]["sent"], report["shop_contacts"]["updated"]) == (1, 1)
    assert report["vip_list"]["sent"] == 0
    assert emulator_contacts(emulator)[changed["email"]]["1"] == "Renamed"

    # A VIP customer's value drops under the threshold: that member, and nothing else, leaves the list.
    def demote(rows):
        row = vip_rows(rows)[0]
        row["lifetime_value"] = "100.00"
        changed["demoted"] = row["email"].strip().lower()

    edit_seed(sample_project, demote)
    fourth = run_cli(["run"], cwd=sample_project, env=env)
    assert fourth.returncode == 1, fourth.output
    report = results(sample_project)
    assert (report["vip_list"]["removed"], report["vip_list"]["added"]) == (1, 0)
    assert report["shop_contacts"]["sent"] == 1           # the same customer's lifetime value changed
    assert vip_members(emulator) == vip_keys - {changed["demoted"]}
    assert changed["demoted"] in emulator_contacts(emulator)    # out of the list, not deleted


def test_an_empty_audience_is_refused_with_the_numbers(sample_project, emulator):
    env = emulator_env(emulator)
    assert run_cli(["run"], cwd=sample_project, env=env).returncode == 1
    members = vip_members(emulator)
    model = sample_project / "models" / "marts" / "vip_customers.sql"
    model.write_text(model.read_text() + "  and false\n")
    run_dbt(["build"], cwd=sample_project)
    refused = run_cli(["run"], cwd=sample_project, env=env)
    assert refused.returncode == 3, refused.output
    vip = results(sample_project)["vip_list"]
    assert vip["status"] == "failed"
    assert f"would remove all {len(members)} members" in vip["message"]
    assert "--allow-mass-removal" in refused.stdout
    assert results(sample_project)["shop_contacts"]["status"] == "rejected_rows"   # the other sync ran
    assert vip_members(emulator) == members

    plan = run_cli(["plan", "--output", "json"], cwd=sample_project, env=env)
    assert plan.returncode == 3, plan.output
    planned = {r["name"]: r for r in json.loads(plan.stdout)["results"]}
    assert planned["vip_list"]["planned_removals"] == len(members)
    assert "would refuse" in planned["vip_list"]["message"]


def test_plan_shows_what_run_would_do_and_writes_nothing(sample_project, emulator):
    env = emulator_env(emulator)
    plan = run_cli(["plan", "--output", "json", "--samples", "2"], cwd=sample_project, env=env)
    assert plan.returncode == 1, plan.output              # rows would be rejected
    planned = {r["name"]: r for r in json.loads(plan.stdout)["results"]}
    keys = model_keys(sample_project, "emarsys_contacts")
    assert planned["shop_contacts"]["planned_new"] == len(keys)
    assert planned["shop_contacts"]["would_create"] == len(keys)
    assert len(planned["shop_contacts"]["samples"]["new"]) == 2
    assert planned["shop_contacts"]["rejected"] > 0
    assert emulator_contacts(emulator) == {}
    writes = [r for r in httpx.get(f"{emulator.url}/_emulator/requests").json() if r["method"] in ("PUT",)
              or r["path"].endswith(("/add", "/delete")) or r["path"].rstrip("/").endswith("/contactlist")
              and r["method"] == "POST"]
    assert writes == []
    state = run_cli(["state", "show", "--output", "json"], cwd=sample_project, env=env)
    assert state.returncode == 0 and json.loads(state.stdout)["exists"] is False

    text = run_cli(["run", "--dry-run"], cwd=sample_project, env=env)
    assert "dry run: nothing was sent" in text.stdout


def test_state_show_and_reset(sample_project, emulator):
    env = emulator_env(emulator)
    run_cli(["run"], cwd=sample_project, env=env)
    shown = run_cli(["state", "show", "--output", "json"], cwd=sample_project, env=env)
    assert shown.returncode == 0, shown.output
    syncs = {s["sync"]: s for s in json.loads(shown.stdout)["syncs"]}
    assert syncs["shop_contacts"]["snapshot_rows"] == len(model_keys(sample_project, "emarsys_contacts"))
    assert syncs["shop_contacts"]["rejected_rows"] > 0 and syncs["shop_contacts"]["lock"] is None
    assert syncs["shop_contacts"]["recent_runs"][0]["status"] == "rejected_rows"

    reset = run_cli(["state", "reset", "--sync", "shop_contacts", "--yes"], cwd=sample_project, env=env)
    assert reset.returncode == 0 and "shop_contacts: forgot" in reset.stdout
    again = run_cli(["run", "--select", "emarsys_contacts"], cwd=sample_project, env=env)
    report = results(sample_project)["shop_contacts"]
    assert (report["sent"], report["created"]) == (len(model_keys(sample_project, "emarsys_contacts")), 0)
    assert again.returncode == 1


# -- crashes --------------------------------------------------------------------------------------


def _upserts_seen(emu) -> int:
    return sum(1 for r in httpx.get(f"{emu.url}/_emulator/requests").json()
               if r["method"] == "PUT" and "/contact" in r["path"])


@pytest.mark.parametrize("kill_after", [2, 9, 23, 66])
def test_a_run_killed_mid_way_converges_on_the_next_run(sample_project, emulator, kill_after):
    """Batches of 40, answered slowly, one sync at a time (shop_contacts' 62 upserts, then vip_list's):
    SIGKILL after `kill_after` upserts reached the emulator, then run again."""
    batch, in_flight = 40, 4
    env = {**emulator_env(emulator), "EMARSYS_RATE_LIMIT": "0"}
    httpx.post(f"{emulator.url}/_emulator/faults", json={"faults": [
        {"type": "slow", "seconds": 0.15, "count": 100000, "path": "/contact", "method": "PUT"}]})
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
    proc = subprocess.Popen([str(BIN / "dbt-emarsys-sync"), "run", "--batch-size", str(batch), "--threads", "1"],
                            cwd=sample_project, env={**full_env, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _upserts_seen(emulator) < kill_after:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.02)   # polling the emulator's request log, not waiting for time to pass
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    httpx.delete(f"{emulator.url}/_emulator/faults")

    rerun = run_cli(["run"], cwd=sample_project, env=env)
    assert rerun.returncode == 1, rerun.output
    report = results(sample_project)
    contacts_keys = model_keys(sample_project, "emarsys_contacts")
    vip_keys = model_keys(sample_project, "vip_customers")
    # Exactly the model's state: every valid contact once, the list holding exactly the audience.
    stored = httpx.get(f"{emulator.url}/_emulator/contacts").json()
    assert sorted(c["3"] for c in stored) == sorted(contacts_keys | vip_keys)
    assert vip_members(emulator) == vip_keys
    # What the killed run had acknowledged is kept and not sent again; what it sent but hadn't
    # recorded is at most the requests in flight and the acknowledged batches of the checkpoint being
    # gathered (a checkpoint is written every `checkpoint_batches` batches, or every second).
    shop, vip = report["shop_contacts"], report["vip_list"]
    shop_batches = -(-len(contacts_keys) // batch)
    unrecorded = in_flight + EngineOptions().checkpoint_batches
    if kill_after <= shop_batches:
        assert shop["recovered"] + shop["sent"] == len(contacts_keys)
        assert shop["recovered"] >= (kill_after - unrecorded) * batch - len(contacts_keys) % batch
    else:
        # Killed while the list was being mirrored: the contacts sync had finished; the list's rows
        # are checkpointed when their membership is acknowledged (one add request per 10,000 keys).
        assert (shop["recovered"], shop["sent"]) == (0, 0)
        assert vip["recovered"] + vip["sent"] == len(vip_keys)

    third = run_cli(["run"], cwd=sample_project, env=env)
    assert all(r["sent"] == 0 for r in results(sample_project).values()), third.output


def test_a_second_run_waits_for_the_first_or_fails_clearly(sample_project, emulator):
    env = {**emulator_env(emulator), "EMARSYS_RATE_LIMIT": "0"}
    httpx.post(f"{emulator.url}/_emulator/faults", json={"faults": [
        {"type": "slow", "seconds": 1.0, "count": 100000, "path": "/contact", "method": "PUT"}]})
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
    first = subprocess.Popen([str(BIN / "dbt-emarsys-sync"), "run", "--batch-size", "40"], cwd=sample_project,
                             env={**full_env, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _upserts_seen(emulator) < 3:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)   # polling the emulator's request log
        impatient = run_cli(["run", "--lock-timeout", "1"], cwd=sample_project, env=env)
        assert impatient.returncode == 3, impatient.output
        assert "in use by another process" in impatient.stderr and "--lock-timeout 1" in impatient.stderr
        patient = run_cli(["run", "--lock-timeout", "300"], cwd=sample_project, env=env)
    finally:
        first.wait(300)
    assert first.returncode == 1
    # The patient run started after the first had finished: nothing was left to send.
    assert patient.returncode == 1, patient.output
    assert all(r["sent"] == 0 for r in results(sample_project).values())


def test_sigterm_stops_cleanly_keeping_what_was_acknowledged(sample_project, emulator):
    env = {**emulator_env(emulator), "EMARSYS_RATE_LIMIT": "0"}
    httpx.post(f"{emulator.url}/_emulator/faults", json={"faults": [
        {"type": "slow", "seconds": 0.3, "count": 100000, "path": "/contact", "method": "PUT"}]})
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
    proc = subprocess.Popen([str(BIN / "dbt-emarsys-sync"), "run", "--batch-size", "40", "--threads", "1"],
                            cwd=sample_project, env={**full_env, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _upserts_seen(emulator) < 10:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)   # polling the emulator's request log
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr
    assert "stopping after the requests in flight" in stderr
    report = results(sample_project)
    interrupted = report["shop_contacts"]
    assert interrupted["status"] == "failed" and "interrupted" in interrupted["message"]
    # Stopped before its turn (one sync at a time): the list sync sent nothing.
    assert report["vip_list"]["status"] == "failed" and report["vip_list"]["sent"] == 0
    assert 0 < interrupted["acknowledged"] < len(model_keys(sample_project, "emarsys_contacts"))
    state = json.loads(run_cli(["state", "show", "--output", "json"], cwd=sample_project, env=env).stdout)
    shop = next(s for s in state["syncs"] if s["sync"] == "shop_contacts")
    assert (shop["pending_plans"], shop["lock"]) == ([], None)
    assert shop["snapshot_rows"] == interrupted["acknowledged"]

    httpx.delete(f"{emulator.url}/_emulator/faults")
    rerun = run_cli(["run"], cwd=sample_project, env=env)
    assert rerun.returncode == 1, rerun.output
    again = results(sample_project)["shop_contacts"]
    assert again["recovered"] == 0
    assert again["sent"] == len(model_keys(sample_project, "emarsys_contacts")) - interrupted["acknowledged"]


def test_an_audience_that_cannot_be_read_is_an_error_not_an_empty_list(sample_project, emulator):
    env = emulator_env(emulator)
    assert run_cli(["run"], cwd=sample_project, env=env).returncode == 1
    members = vip_members(emulator)
    # The audience becomes a view over a table that then disappears: reading it fails.
    con = duckdb.connect(str(sample_project / "target" / "sample_shop.duckdb"))
    con.execute("create table main.vip_source as select * from main.vip_customers")
    con.execute("drop table main.vip_customers")
    con.execute("create view main.vip_customers as select * from main.vip_source")
    con.execute("drop table main.vip_source")
    con.close()
    broken = run_cli(["run", "--select", "vip_customers", "--ignore-build-results"], cwd=sample_project, env=env)
    assert broken.returncode == 2, broken.output
    assert "model vip_customers can't be read" in broken.stderr and "vip_source" in broken.stderr
    assert "Traceback" not in broken.output
    assert vip_members(emulator) == members


def test_a_state_is_bound_to_the_emarsys_that_acknowledged_it(sample_project, emulator):
    """Synced to one Emarsys, then pointed at another (here a second emulator, reached as `localhost`):
    the state's snapshot says nothing about the new one, so the run refuses before sending anything,
    until --full-refresh sends every row there and the state follows it."""
    from dbt_emarsys_sync.emulator import EmulatorConfig, EmulatorThread

    first_env = emulator_env(emulator)
    assert run_cli(["run"], cwd=sample_project, env=first_env).returncode == 1
    contacts_keys = model_keys(sample_project, "emarsys_contacts")
    with EmulatorThread(EmulatorConfig(rate_limit=0)) as other:
        other_env = {**emulator_env(other),
                     "EMARSYS_API_URL": other.url.replace("127.0.0.1", "localhost"),
                     "EMARSYS_AUTH_URL": other.token_url.replace("127.0.0.1", "localhost")}
        for command in (["run"], ["plan"]):
            refused = run_cli(command, cwd=sample_project, env=other_env)
            assert refused.returncode == 2, refused.output
            assert "sync shop_contacts: its state (main_emarsys_sync) holds what http://127.0.0.1 acknowledged" \
                in refused.stderr and "writes to http://localhost" in refused.stderr
            assert "--full-refresh" in refused.stderr and "Traceback" not in refused.output
        assert httpx.get(f"{other.url}/_emulator/requests").json() == []

        moved = run_cli(["run", "--full-refresh"], cwd=sample_project, env=other_env)
        assert moved.returncode == 1, moved.output
        assert set(emulator_contacts(other)) >= contacts_keys and vip_members(other) == \
            model_keys(sample_project, "vip_customers")
        again = run_cli(["run"], cwd=sample_project, env=other_env)
        assert again.returncode == 1 and all(r["sent"] == 0 for r in results(sample_project).values())
        shown = json.loads(run_cli(["state", "show", "--output", "json"], cwd=sample_project).stdout)
        assert {s["sync"]: s["emarsys"]["api"] for s in shown["syncs"]} == {
            "shop_contacts": "http://localhost", "vip_list": "http://localhost"}

    back = run_cli(["run"], cwd=sample_project, env=first_env)
    assert back.returncode == 2 and "holds what http://localhost acknowledged" in back.stderr
