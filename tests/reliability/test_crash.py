"""Crash test: the runner, a process of its own, killed with SIGKILL at random points and run again.

A contacts sync (update_or_create) and a list mirror are each loaded under kills at points drawn from a
seeded random generator (the seed is printed; RELIABILITY_SEED repeats a sequence), each kill followed
by a rerun, until a run completes. Then the state's own commits are hit: a kill inside a checkpoint
transaction, inside the recovery of the interrupted plan, and inside the final fold. At the end:

- the emulator holds exactly the model (every contact with its values; the list's members);
- the contacts sent in total are at most the rows plus, per kill, what can be sent but not yet
  checkpointed: for contacts the requests in flight (the engine keeps 4 batches of 1,000 in flight per
  sync) and the acknowledged batches not yet written (a checkpoint gathers up to 8); for a mirror,
  whose contacts are checkpointed when their list add (10,000 keys) is acknowledged, an add in flight, the contacts gathered for the next add and the upserts in flight;
- the state acknowledges every key, holds no pending plan and no lock; DuckDB reopened cleanly after
  every kill (its write-ahead log replayed or discarded, never half a transaction).

The emulator runs in the test process (a thread), so it outlives every killed runner. To kill inside a
state commit, the runner is started through a small launcher that reports (on a pipe) when a checkpoint
or a fold begins, then calls the real command; it changes nothing else.

Shortened variant (CI): 20,000 rows, 2 random kills per sync, the three commit kills for contacts and
the final-fold kill for the mirror. Full (`-m slow` or RELIABILITY_FULL=1): 100,000 rows, 10 random
kills per sync, the three commit kills for both.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.support import (DATABASE, LIST_NAME, PYTHON, STATE_SCHEMA, Control, assert_contacts_equal,
                                       assert_no_key_twice_in_a_request, emulator_env, locks, pending_plans,
                                       snapshot_keys, sql)

pytestmark = pytest.mark.reliability

SEED = int(os.environ.get("RELIABILITY_SEED", "20261203"))
IN_FLIGHT_BATCHES = 4          # EngineOptions.in_flight
CHECKPOINT_BATCHES = 8         # EngineOptions.checkpoint_batches: acknowledged batches per checkpoint
BATCH = 1000                   # contacts per request (the default, Emarsys's maximum)
LIST_BATCH = 10_000            # keys per list add (EngineOptions.list_batch)
# What a kill can leave sent but not checkpointed (see the module docstring): the requests in flight
# and the acknowledged batches of the checkpoint being gathered.
UNCHECKPOINTED = {"contacts": (IN_FLIGHT_BATCHES + CHECKPOINT_BATCHES - 1) * BATCH,
                  "audience": 2 * LIST_BATCH + (IN_FLIGHT_BATCHES - 1) * BATCH}

# Starts the real command after wrapping two StateStore methods so that each reports on a pipe when
# it begins. Nothing else changes: the wrappers call the originals with the same arguments.
LAUNCHER = """
import os, sys
from dbt_emarsys_sync.dbt import state
signal_fd = int(os.environ["RELIABILITY_SIGNAL_FD"])

def reporting(name, original):
    def wrapper(self, *args, **kwargs):
        os.write(signal_fd, name.encode() + b"\\n")
        return original(self, *args, **kwargs)
    return wrapper

state.StateStore.checkpoint = reporting("checkpoint", state.StateStore.checkpoint)
state.StateStore.fold = reporting("fold", state.StateStore.fold)
from dbt_emarsys_sync.cli import main
sys.argv[0] = "dbt-emarsys-sync"
main()
"""


# -- the model, generated in DuckDB ------------------------------------------------------------------


def write_people_sql(project: Path, rows: int, version: int = 1, changed_every: int = 0) -> None:
    """raw_people with `rows` synthetic people; every `changed_every`-th row's first name carries
    `version` (a model change touching that share of the rows)."""
    import duckdb

    changed = f"i % {changed_every} = 0" if changed_every else "false"
    con = duckdb.connect(str(project / DATABASE))
    try:
        con.execute(f"""
            create or replace table main.raw_people as
            select 'person.' || i || '@crash.example.com' as email,
                   case when {changed} then 'First' || i || '-v{version}' else 'First' || i end as first_name,
                   'Last' || i as last_name,
                   case when i % 7 = 0 then null else i % 2 = 0 end as optin,
                   cast((i * 37 % 1000000) / 100 as decimal(12, 2)) as lifetime_value,
                   (['Bronze', 'Silver', 'Gold', 'Platinum'])[1 + i % 4] as loyalty_tier,
                   date '1950-01-01' + cast(i % 20000 as integer) as birth_date,
                   'note ' || i as notes
            from range(1, {rows} + 1) as t(i)""")
    finally:
        con.close()


def write_audience_sql(project: Path, first: int, last: int) -> None:
    import duckdb

    con = duckdb.connect(str(project / DATABASE))
    try:
        con.execute(f"""
            create or replace table main.raw_audience as
            select 'person.' || i || '@crash.example.com' as email, 'First' || i as first_name
            from range({first}, {last} + 1) as t(i)""")
    finally:
        con.close()


def model_contacts(project: Path, sync: str) -> dict[str, dict]:
    """What the emulator must hold for the model's rows, in /_emulator/contacts's shape."""
    if sync == "audience":
        rows = sql(project, "select email, first_name from main.audience")
        return {email: {"3": email, "1": first} for email, first in rows}
    rows = sql(project, "select email, first_name, last_name, optin, lifetime_value, loyalty_tier, "
                        "birth_date, notes from main.contacts")
    tiers = {"Bronze": 1, "Silver": 2, "Gold": 3, "Platinum": 4}
    out = {}
    for email, first, last, optin, value, tier, born, notes in rows:
        contact = {"3": email, "1": first, "2": last, "5001": format(value.normalize(), "f"),
                   "5003": tiers[tier], "4": born.isoformat(), "5006": notes}
        if optin is not None:
            contact["31"] = 1 if optin else 2
        out[email] = contact
    return out


# -- running and killing the runner ---------------------------------------------------------------------


@dataclass
class Run:
    """One runner process: what it reported on the pipe, and how it ended."""

    proc: subprocess.Popen
    signal_read: int
    log: Path
    started: float = field(default_factory=time.monotonic)
    reports: list[str] = field(default_factory=list)
    _pending: bytes = b""

    def poll_reports(self, timeout: float = 0.0) -> list[str]:
        ready, _, _ = select.select([self.signal_read], [], [], timeout)
        if ready:
            chunk = os.read(self.signal_read, 65536)
            self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            new = [line.decode() for line in lines]
            self.reports += new
            return new
        return []

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        os.close(self.signal_read)

    def wait(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout)
        os.close(self.signal_read)
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


class Crasher:
    """Starts runs of one sync and kills them; counts what the emulator received."""

    def __init__(self, project: Path, emu, sync: str, logs: Path):
        self.project, self.emu, self.sync, self.logs = project, emu, sync, logs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
        self.env.update(emulator_env(emu))
        self.runs = 0
        self.kills: list[str] = []

    def start(self) -> Run:
        read, write = os.pipe()
        self.runs += 1
        log = self.logs / f"{self.sync}-run-{self.runs}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([PYTHON, "-c", LAUNCHER, "run", "--select", self.sync],
                                    cwd=self.project, env={**self.env, "RELIABILITY_SIGNAL_FD": str(write)},
                                    stdout=out, stderr=subprocess.STDOUT, pass_fds=(write,))
        os.close(write)
        return Run(proc, read, log)

    def received(self, kind: str = "contacts") -> int:
        """Keys the emulator processed: contact upserts, list adds, or every write (upserts, adds and
        removals)."""
        entries = self.emu.emulator.requests.entries()
        if kind == "contacts":
            return sum(len(e.get("keys") or ()) for e in entries if e["method"] == "PUT")
        if kind == "adds":
            return sum(len(e.get("keys") or ()) for e in entries if e["path"].endswith("/add"))
        return sum(len(e.get("keys") or ()) for e in entries
                   if e["method"] == "PUT" or e["path"].endswith(("/add", "/delete")))

    def kill_when(self, run: Run, condition, what: str) -> bool:
        """Kill `run` as soon as `condition(run)` holds; False if the run ended first."""
        while run.proc.poll() is None:
            run.poll_reports(0.005)
            if condition(run):
                run.kill()
                self.kills.append(what)
                return True
        run.wait()
        return False

    def complete(self) -> str:
        run = self.start()
        code = run.wait()
        assert code == 0, f"the run after the kills ended with {code}:\n{run.output()}"
        return run.output()


def random_kill_points(rng: random.Random, kills: int, total: int) -> list[tuple[str, float]]:
    """Kill points: a few while the run starts and plans (a delay in seconds, anywhere in the
    sequence; cut short when the run's first write reaches the emulator, so a run faster than the
    delay is still killed before it sends), the rest once the emulator has received a number of
    contacts (increasing)."""
    at_start = max(1, kills // 5)
    points: list[tuple[str, float]] = [("received", n) for n in
                                       sorted(rng.sample(range(BATCH, total), kills - at_start))]
    for _ in range(at_start):
        points.insert(rng.randrange(len(points) + 1), ("start", round(rng.uniform(0.5, 5.0), 2)))
    return points


def kill_at_points(crasher: Crasher, points, kind: str = "contacts") -> None:
    for how, value in points:
        run = crasher.start()
        if how == "start":
            sent_before = crasher.received(kind)
            condition = (lambda r, v=value, b=sent_before:
                         time.monotonic() - r.started >= v or crasher.received(kind) > b)
        else:
            condition = (lambda r, v=value: crasher.received(kind) >= v)
        if not crasher.kill_when(run, condition, f"{how}={value}"):
            raise AssertionError(f"the run ended (exit {run.proc.returncode}) before the kill at {how}={value}:\n"
                                 f"{run.output()}")


def kill_inside(crasher: Crasher, report: str, nth: int = 1, after_put: bool = False) -> None:
    """Kill the next run right as its `nth` `report` ("checkpoint" or "fold") begins: inside that
    state transaction. `after_put`: the first fold after this run wrote anything (contacts, list
    members): the final fold, not the recovery of an earlier plan."""
    before = crasher.received("writes")
    folds_before_sending: list[int] = []

    def inside(run: Run) -> bool:
        if not after_put:
            return run.reports.count(report) >= nth
        if not folds_before_sending:
            if crasher.received("writes") == before:
                return False
            folds_before_sending.append(run.reports.count("fold"))
        return run.reports.count("fold") > folds_before_sending[0]

    run = crasher.start()
    what = "inside the fold after sending" if after_put else f"inside {report} #{nth}"
    if not crasher.kill_when(run, inside, what):
        raise AssertionError(f"the run ended before it was killed {what}:\n{run.output()}")


def assert_state_complete(project: Path, sync: str, keys: set[str]) -> None:
    assert snapshot_keys(project, sync) == keys
    assert pending_plans(project, sync) == []
    assert locks(project) == []
    interrupted = sql(project, f"select count(*) from {STATE_SCHEMA}.sync_runs where sync_name = '{sync}' "
                               "and status = 'running'")[0][0]
    assert interrupted == 0, "a killed run is still recorded as running after its recovery"


# -- the scenarios ---------------------------------------------------------------------------------------


def crash_contacts(project, emu, tmp_path, rows: int, kills: int) -> dict:
    control = Control(emu)
    rng = random.Random(SEED)
    points = random_kill_points(rng, kills, rows)
    print(f"crash test (contacts): seed {SEED}, {rows} rows, kill points {points}")
    write_people_sql(project, rows)
    crasher = Crasher(project, emu, "contacts", tmp_path)
    t0 = time.monotonic()
    kill_at_points(crasher, points)
    crasher.complete()
    load_seconds = time.monotonic() - t0
    sent = crasher.received()
    assert_contacts_equal(control.contacts(), model_contacts(project, "contacts"))
    assert sent <= rows + kills * UNCHECKPOINTED["contacts"], f"{sent} contacts sent for {rows} rows"
    figures = {"rows": rows, "kills": kills, "contacts_sent": sent, "resent": sent - rows,
               "load_seconds": round(load_seconds, 1), "runs": crasher.runs}

    # The state's own commits: a checkpoint, the recovery of the killed plan, the final fold.
    changed_every = 10
    write_people_sql(project, rows, version=2, changed_every=changed_every)
    changed = rows // changed_every
    before = crasher.received()
    kill_inside(crasher, "checkpoint", nth=1)
    kill_inside(crasher, "fold", nth=1)                     # the recovery of the plan just killed
    kill_inside(crasher, "fold", after_put=True)            # the fold after this run's sends
    crasher.complete()
    resent = crasher.received() - before - changed
    assert_contacts_equal(control.contacts(), model_contacts(project, "contacts"))
    assert resent <= 3 * UNCHECKPOINTED["contacts"], f"{resent} contacts sent again after commit kills"
    assert_state_complete(project, "contacts", {f"person.{i}@crash.example.com" for i in range(1, rows + 1)})
    assert_no_key_twice_in_a_request(control.requests())
    figures.update(commit_kills=crasher.kills[-3:], changed_rows=changed, resent_after_commit_kills=resent,
                   total_runs=crasher.runs)
    control.close()
    return figures


def crash_mirror(project, emu, tmp_path, members: int, kills: int, all_commit_kills: bool) -> dict:
    control = Control(emu)
    rng = random.Random(SEED + 1)
    points = random_kill_points(rng, kills, members)
    print(f"crash test (mirror): seed {SEED + 1}, {members} members, kill points {points}")
    write_audience_sql(project, 1, members)
    crasher = Crasher(project, emu, "audience", tmp_path)
    t0 = time.monotonic()
    kill_at_points(crasher, points)
    crasher.complete()
    load_seconds = time.monotonic() - t0
    keys = {f"person.{i}@crash.example.com" for i in range(1, members + 1)}
    assert control.lists()[LIST_NAME] == keys
    assert_contacts_equal(control.contacts(), model_contacts(project, "audience"))
    sent = crasher.received()
    assert sent <= members + kills * UNCHECKPOINTED["audience"], f"{sent} contacts sent for {members} members"
    figures = {"members": members, "kills": kills, "contacts_sent": sent, "resent": sent - members,
               "list_adds_sent": crasher.received("adds"), "load_seconds": round(load_seconds, 1)}

    # Churn: 10% leave, 10% enter; killed inside the final fold (and, in the full variant, first inside
    # a checkpoint and inside the recovery: the contacts scenario covers those in CI).
    churn = members // 10
    write_audience_sql(project, churn + 1, members + churn)
    if all_commit_kills:
        kill_inside(crasher, "checkpoint", nth=1)
        kill_inside(crasher, "fold", nth=1)
    kill_inside(crasher, "fold", after_put=True)
    crasher.complete()
    keys = {f"person.{i}@crash.example.com" for i in range(churn + 1, members + churn + 1)}
    assert control.lists()[LIST_NAME] == keys
    # Contacts are never deleted: the leavers stay, the newcomers exist.
    expected = model_contacts(project, "audience")
    expected.update({f"person.{i}@crash.example.com": {"3": f"person.{i}@crash.example.com", "1": f"First{i}"}
                     for i in range(1, churn + 1)})
    assert_contacts_equal(control.contacts(), expected)
    assert_state_complete(project, "audience", keys)
    assert_no_key_twice_in_a_request(control.requests())
    figures.update(churn=churn, commit_kills=crasher.kills[kills:], total_runs=crasher.runs)
    control.close()
    return figures


def _record(tmp_path: Path, name: str, figures: dict) -> None:
    print(f"{name}: {json.dumps(figures)}")
    results = Path(os.environ.get("RELIABILITY_RESULTS_DIR", tmp_path))
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(figures, indent=2))


def test_crash_contacts(project, emu, tmp_path):
    _record(tmp_path, "crash_contacts", crash_contacts(project, emu, tmp_path, rows=20_000, kills=2))


def test_crash_mirror(project, emu, tmp_path):
    _record(tmp_path, "crash_mirror", crash_mirror(project, emu, tmp_path, members=20_000, kills=2,
                                                   all_commit_kills=False))


@pytest.mark.slow
def test_crash_contacts_full(project, emu, tmp_path):
    _record(tmp_path, "crash_contacts_full", crash_contacts(project, emu, tmp_path, rows=100_000, kills=10))


@pytest.mark.slow
def test_crash_mirror_full(project, emu, tmp_path):
    _record(tmp_path, "crash_mirror_full", crash_mirror(project, emu, tmp_path, members=100_000, kills=10,
                                                        all_commit_kills=True))
