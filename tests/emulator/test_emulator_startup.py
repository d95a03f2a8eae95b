"""Faults, settings, API users and seed data are settable at start (contracts item 1): through
`EmulatorConfig`, the CLI's flags and a `--config FILE`; `--store FILE` keeps contacts and lists."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dbt_emarsys_sync.emulator import EmulatorConfig, EmulatorThread, StoreOptions
from tests.emulator.conftest import Api, data, reply

BIN = Path(sys.executable).parent / "dbt-emarsys-sync"


def test_emulator_config_takes_settings_faults_users_and_seed():
    """EmulatorConfig(faults=[...], <any setting>=..., users=[...], seed={...})."""
    config = EmulatorConfig(
        rate_limit=0, read_after_write_lag=5, truncate_text=True,
        faults=[{"type": "status", "status": 503, "path": "/field"}],
        users=[{"name": "lists-only", "secret": "pw", "scheme": "wsse", "permissions": ["contactlist.get"]}],
        seed={"contacts": [{"3": "seeded@example.com"}], "lists": [{"name": "Seeded"}]})
    with EmulatorThread(config) as emu, httpx.Client(base_url=emu.url) as http:
        settings = http.get("/_emulator/settings").json()
        assert settings["read_after_write_lag"] == 5 and settings["truncate_text"] is True
        assert http.get("/_emulator/faults").json()["faults"][0]["status"] == 503
        assert [c["3"] for c in http.get("/_emulator/contacts").json()] == ["seeded@example.com"]
        user = Api(http, "wsse", "lists-only", "pw")
        assert [item["name"] for item in data(user.get("/contactlist"))] == ["Seeded"]
        assert user.get("/field").status_code == 503   # the fault comes first ...
        assert user.get("/field").status_code == 403   # ... then the missing permission
        http.post("/_emulator/reset")   # a reset goes back to exactly this start state
        assert [c["3"] for c in http.get("/_emulator/contacts").json()] == ["seeded@example.com"]
        assert len(http.get("/_emulator/faults").json()["faults"]) == 1


def test_a_bad_start_config_names_the_problem():
    with pytest.raises(ValueError, match=r"faults\[0\].*'seconds'"):
        EmulatorConfig(faults=[{"type": "hang"}])
    with pytest.raises(ValueError, match="rate_limit_window"):
        EmulatorConfig(rate_limit_window="hourly")
    with pytest.raises(ValueError, match=r"unknown option\(s\) colour"):
        EmulatorConfig.from_mapping({"colour": "blue"}, source="emulator.yml")


def test_legacy_store_options_still_apply():
    """`EmulatorConfig(store_options=StoreOptions(...))`, the first version's way, keeps working."""
    config = EmulatorConfig(store_options=StoreOptions(truncate_text=True, email_case_sensitive=False))
    assert config.truncate_text is True and config.email_case_sensitive is False


def start_cli(args: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """`dbt-emarsys-sync emulator --port 0 ARGS`; returns the process and the URL it printed."""
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([str(BIN), "emulator", "--port", "0", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        match = re.search(r"Emarsys emulator on (http://127\.0\.0\.1:\d+)", line)
        if match:
            url = match.group(1)
            break
    else:
        raise AssertionError(f"the emulator did not start (exit {proc.wait()})")
    # Printed before serving: wait for readiness.
    with httpx.Client(base_url=url) as http:
        for _ in range(500):
            try:
                http.get("/_emulator/health")
                return proc, url
            except httpx.ConnectError:
                continue
    proc.kill()
    raise AssertionError("the emulator never answered its health check")


def stop_cli(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_cli_takes_a_config_file_flags_and_faults(tmp_path):
    """CLI: --config FILE (YAML), flags overriding it, --set NAME=VALUE, --fault JSON."""
    (tmp_path / "emulator.yml").write_text(
        "rate_limit: 0\n"
        "settings:\n  read_after_write_lag: 3\n  duplicate_keys_in_batch: last_wins\n"
        "users:\n  - {name: reader, secret: pw, scheme: oauth, permissions: [field.get]}\n"
        "faults:\n  - {type: status, status: 502, count: 2, path: /field}\n"
        "seed:\n  contacts:\n    - {'3': 'from-config@example.com'}\n")
    proc, url = start_cli(["--config", "emulator.yml", "--read-after-write-lag", "1.5", "--truncate-text",
                           "--set", "v3_contact_ids=true", "--fault", '{"type": "drop", "path": "/x"}'],
                          cwd=tmp_path)
    try:
        with httpx.Client(base_url=url) as http:
            settings = http.get("/_emulator/settings").json()
            assert settings["read_after_write_lag"] == 1.5 and settings["truncate_text"] is True
            assert settings["v3_contact_ids"] is True and settings["duplicate_keys_in_batch"] == "last_wins"
            faults = http.get("/_emulator/faults").json()["faults"]
            assert [(f["type"], f["count"]) for f in faults] == [("status", 2), ("drop", 1)]
            assert http.get("/_emulator/contacts").json()[0]["3"] == "from-config@example.com"
            reader = Api(http, "oauth", "reader", "pw")
            assert reply(reader.get("/field")) == (502, 1003)
    finally:
        stop_cli(proc)


def test_cli_reports_a_bad_config_file_and_exits_2(tmp_path):
    (tmp_path / "bad.yml").write_text("faults:\n  - {type: explode}\n")
    proc = subprocess.run([str(BIN), "emulator", "--port", "0", "--config", "bad.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "bad.yml" in proc.stderr and "faults[0]" in proc.stderr and "explode" in proc.stderr


def test_store_file_keeps_contacts_and_lists_across_restarts(tmp_path):
    """--store FILE: contacts and contact lists survive a restart."""
    proc, url = start_cli(["--store", "store.json", "--rate-limit", "0"], cwd=tmp_path)
    try:
        with httpx.Client(base_url=url) as http:
            api = Api(http, "oauth", "sandbox-client", "sandbox-client-secret")
            api.upsert([{"3": "kept@example.com"}])
            list_id = data(api.post("/contactlist", {"name": "Kept", "key_id": "3",
                                                     "external_ids": ["kept@example.com"]}))["id"]
    finally:
        stop_cli(proc)
    assert json.loads((tmp_path / "store.json").read_text())["lists"][0]["name"] == "Kept"
    proc, url = start_cli(["--store", "store.json"], cwd=tmp_path)
    try:
        with httpx.Client(base_url=url) as http:
            lists = http.get("/_emulator/lists").json()
            assert lists[0]["id"] == list_id and lists[0]["emails"] == ["kept@example.com"]
            api = Api(http, "oauth", "sandbox-client", "sandbox-client-secret")
            assert data(api.post("/contactlist", {"name": "Next"}))["id"] == list_id + 1
    finally:
        stop_cli(proc)


@pytest.mark.parametrize("args, message", [
    (["--store", "nope/x.json"], "--store nope/x.json: the directory nope does not exist"),
    (["--store", "taken/x.json"], "--store taken/x.json: cannot write taken/x.json.tmp"),
    (["--port", "70000"], "Invalid value for '--port': 70000 is not in the range 0<=x<=65535"),
])
def test_cli_refuses_a_store_it_could_not_write_and_a_port_out_of_range(tmp_path, args, message):
    """Found at start, not at shutdown (where an unwritable store would lose the sandbox's data)."""
    (tmp_path / "taken" / "x.json.tmp").mkdir(parents=True)     # where the store is written through
    proc = subprocess.run([str(BIN), "emulator", "--port", "0", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "Emarsys emulator on" not in proc.stdout
