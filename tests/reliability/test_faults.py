"""Fault matrix: every behaviour x every fault the emulator can inject, over loopback HTTP.

Each case runs the real CLI (in-process, see support.cli) against the emulator with the fault pending.
The run either completes, or fails with a clear message and the next run (the outage over) completes.
Either way, at the end:
- the emulator holds exactly the model's data: every contact the model names with the model's values,
  the values the model leaves null untouched (opt-in above all), nothing else changed or created;
- the list holds exactly the model's keys (mirror);
- no request carried a key twice; the state acknowledges exactly the model's keys, no plan or lock left.

Retries run in stamina's test mode (no waits, same number of attempts), so a case takes about a second.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.reliability.support import (LIST_NAME, Control, assert_contacts_equal, assert_no_key_twice_in_a_request,
                                       cli, emulator_env, expected_contacts, locks, member, pending_plans, person,
                                       rejected_keys, seed_people, snapshot_keys,
                                       snapshot_keys_with_current_values, write_audience, write_people)

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("fast_retries")]

ROWS = 45            # model rows; with --batch-size 10, five contact requests (four in flight at once)
BATCH = ["--batch-size", "10"]
BEHAVIOURS = {"update_or_create": "contacts", "update_only": "known_contacts", "mirror": "audience"}

# Faults on every contact and contact-list request ("/contact" is in both paths).
WRITES = "/contact"
FAULTS = {
    # Emarsys sends no Retry-After; its X-RateLimit-Reset is when the window frees a slot (here in a
    # second: a real wait the client must honour, kept short).
    "429_storm": [{"type": "status", "status": 429, "count": 3, "path": WRITES, "reset_seconds": 0}],
    "429_storm_past_retries": [{"type": "status", "status": 429, "count": 16, "path": WRITES,
                                "reset_seconds": 0}],
    "500_burst": [{"type": "status", "status": 500, "count": 3, "path": WRITES}],
    "502_burst": [{"type": "status", "status": 502, "count": 3, "path": WRITES}],
    "503_burst": [{"type": "status", "status": 503, "count": 3, "path": WRITES}],
    "503_outage": [{"type": "status", "status": 503, "count": 16, "path": WRITES}],
    "timeout": [{"type": "hang", "seconds": 2.5, "count": 2, "path": WRITES}],
    "drop_before_write": [{"type": "drop", "count": 3, "path": WRITES}],
    "drop_after_write": [{"type": "drop_after_write", "count": 3, "path": WRITES}],
    "token_endpoint_503": [{"type": "status", "status": 503, "count": 2, "path": "/oauth2/token"}],
    "already_exists_race": [{"type": "already_exists", "count": 2, "path": WRITES}],
}
# Request timeouts: the client gives up after EMARSYS_TIMEOUT seconds; the hang outlasts it.
CLIENT_TIMEOUT = "1"


def _run(project, sync: str, env):
    return cli(project, ["run", "--select", sync, *BATCH], env)


def _assert_clear_failure(outcome) -> None:
    assert outcome.exception is None, outcome.describe()
    assert outcome.exit_code in (1, 3), outcome.describe()
    if outcome.exit_code == 3:
        # The summary names the sync and says what went wrong, in words.
        assert "failed" in outcome.output and ("gave up" in outcome.output or "could not be sent" in outcome.output), \
            outcome.describe()


class Scenario:
    """One behaviour's data before and after, and the checks of the module docstring."""

    def __init__(self, behaviour: str, project, control: Control):
        self.behaviour, self.project, self.control = behaviour, project, control
        self.sync = BEHAVIOURS[behaviour]
        self.outcomes: list = []
        if behaviour == "mirror":
            # The audience before (30 members, a clean run) and now: 5 left, 10 entered.
            self.before_rows = [member(i) for i in range(1, 31)]
            self.rows = [member(i) for i in range(6, 41)]
        else:
            self.rows = [person(i) for i in range(1, ROWS + 1)]
            # Contacts already in Emarsys, opted in: some of the model's (all of them for update_only,
            # which never creates) and five the model doesn't name.
            known = self.rows if behaviour == "update_only" else self.rows[::2]
            seed_people(control, known + [person(i) for i in range(900, 905)])

    def prepare(self, env) -> None:
        if self.behaviour == "mirror":
            write_audience(self.project, self.before_rows)
            first = _run(self.project, self.sync, env)
            assert first.exit_code == 0, first.describe()
            write_audience(self.project, self.rows)
        else:
            write_people(self.project, self.rows)
        self.before = self.control.contacts()

    def run_until_complete(self, env, *, end_outage=True) -> None:
        outcome = _run(self.project, self.sync, env)
        self.outcomes.append(outcome)
        if outcome.exit_code != 0:
            _assert_clear_failure(outcome)
            if end_outage:
                self.control.clear_faults()
            outcome = _run(self.project, self.sync, env)
            self.outcomes.append(outcome)
        assert outcome.exit_code == 0, outcome.describe()

    def check(self) -> None:
        control, project = self.control, self.project
        keys = {r["email"] for r in self.rows}
        if self.behaviour == "mirror":
            assert control.lists().get(LIST_NAME) == keys
            assert_contacts_equal(control.contacts(), expected_contacts(self.before, self.rows, self.sync, create=True))
        else:
            assert_contacts_equal(control.contacts(), expected_contacts(
                self.before, self.rows, self.sync, create=self.behaviour == "update_or_create"))
        assert_no_key_twice_in_a_request(control.requests())
        assert snapshot_keys(project, self.sync) == keys
        assert pending_plans(project, self.sync) == []
        assert locks(project) == []


# A storm outlasting the retries waits out many 429 holds (X-RateLimit-Reset plus up to 2 s of jitter
# each): CI runs it for update_or_create, the other behaviours on demand (`slow`).
SLOW_CASES = {("update_only", "429_storm_past_retries"), ("mirror", "429_storm_past_retries")}
CASES = [pytest.param(b, f, id=f"{b}-{f}", marks=[pytest.mark.slow] if (b, f) in SLOW_CASES else [])
         for b in BEHAVIOURS for f in FAULTS]


@pytest.mark.parametrize("behaviour, fault", CASES)
def test_fault(behaviour, fault, project, emu, control):
    env = emulator_env(emu, EMARSYS_TIMEOUT=CLIENT_TIMEOUT)
    scenario = Scenario(behaviour, project, control)
    scenario.prepare(env)
    control.add_faults(*FAULTS[fault])
    scenario.run_until_complete(env)
    _wait_for_hung_requests(control, FAULTS[fault])
    scenario.check()


def _wait_for_hung_requests(control: Control, faults: list[dict], timeout: float = 15) -> None:
    """A hung request is processed after the client gave up on it: wait until the emulator has
    processed every one that hung (it logs a request once done), so its late write is checked too."""
    hangs = sum(f.get("count", 1) for f in faults if f["type"] == "hang")
    if not hangs:
        return
    consumed = hangs - sum(f.get("count", 1) for f in control.pending_faults() if f["type"] == "hang")
    deadline = time.monotonic() + timeout
    while sum(1 for r in control.requests() if r.get("fault") == "hang") < consumed:
        assert time.monotonic() < deadline, "a hung request was never processed"
        time.sleep(0.05)   # polls the emulator's request log; the hang itself ends on its own


# -- faults that need a run's timing: token expiry mid-run, WSSE clock skew, read-after-write lag ------

# The request held while the tokens are revoked: the first of the writes, so every later request of the
# run meets a revoked token (contacts: four requests are in flight, the fifth goes after them).
HELD_FOR_EXPIRY = {
    "update_or_create": {"type": "slow", "seconds": 0.7, "count": 4, "method": "PUT", "path": "/contact"},
    "update_only": {"type": "slow", "seconds": 0.7, "count": 4, "method": "PUT", "path": "/contact"},
    "mirror": {"type": "slow", "seconds": 0.7, "count": 1, "method": "GET", "path": "/contactlist"},
}


@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
def test_token_expiry_mid_run(behaviour, project, emu, control):
    env = emulator_env(emu)
    scenario = Scenario(behaviour, project, control)
    scenario.prepare(env)
    held = HELD_FOR_EXPIRY[behaviour]
    control.add_faults(held)

    def revoke_while_held() -> None:
        deadline = time.monotonic() + 30
        while control.pending_faults() and time.monotonic() < deadline:
            time.sleep(0.01)   # polls until every held request has arrived
        control.expire_tokens()

    revoker = threading.Thread(target=revoke_while_held, daemon=True)
    revoker.start()
    outcome = _run(project, scenario.sync, env)
    revoker.join(30)
    assert outcome.exit_code == 0, outcome.describe()
    requests = control.requests()
    assert any(r["status"] == 401 for r in requests), "no request met the revoked token"
    tokens = [r for r in requests if r["path"] == "/oauth2/token" and r["status"] == 200]
    assert len(tokens) >= 2, "the client did not fetch a new token after the revocation"
    scenario.check()


@pytest.mark.parametrize("skew", [400, -400])
@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
def test_wsse_clock_skew(behaviour, skew, project, emu, control):
    """The server's clock is 400 s off ours (its WSSE window is 5 minutes): the first request is
    refused as outside the time frame; the client signs with the server's time (its Date header)."""
    env = emulator_env(emu, scheme="wsse")
    scenario = Scenario(behaviour, project, control)
    scenario.prepare(env)
    control.settings(clock_skew=skew)
    outcome = _run(project, scenario.sync, env)
    assert outcome.exit_code == 0, outcome.describe()
    assert any(r["status"] == 401 for r in control.requests()), "the skew was never noticed"
    scenario.check()


def test_read_after_write_lag_update_or_create(project, emu, control):
    """Contacts created a moment ago can't be written again yet (2009, the documented race): the
    run rejects those rows with that reason, keeps them unacknowledged, and sends them once visible."""
    env = emulator_env(emu)
    scenario = Scenario("update_or_create", project, control)
    scenario.prepare(env)
    control.settings(read_after_write_lag=60)
    created = _run(project, scenario.sync, env)
    assert created.exit_code == 0, created.describe()
    new_keys = {r["email"] for r in scenario.rows} - set(scenario.before)
    # The model changes every row right away; the new contacts are still invisible.
    scenario.rows = [dict(r, first_name=r["first_name"] + "-v2") for r in scenario.rows]
    write_people(project, scenario.rows)
    raced = _run(project, scenario.sync, env)
    assert raced.exit_code == 1, raced.describe()
    assert rejected_keys(project, "contacts") == {k: "2009" for k in new_keys}
    assert not any(control.contacts()[k]["1"].endswith("-v2") for k in new_keys), "a rejected row was written"
    assert not new_keys & snapshot_keys_with_current_values(project, scenario.sync), \
        "the state acknowledged rows Emarsys rejected"
    control.settings(clock_skew=120)     # the emulator's clock jumps past the lag
    final = _run(project, scenario.sync, env)
    assert final.exit_code == 0, final.describe()
    scenario.check()


def test_read_after_write_lag_update_only(project, emu, control):
    """update_only right after another sync created the contacts: Emarsys can't write them yet (it
    answers 2009 "already exists" or 2008 "not found"); the rows are rejected with that reason, never
    created twice, and updated once visible."""
    env = emulator_env(emu)
    scenario = Scenario("update_only", project, control)
    scenario.prepare(env)
    newcomers = [person(i) for i in range(100, 110)]
    write_people(project, scenario.rows + newcomers)
    control.settings(read_after_write_lag=60)
    assert _run(project, "contacts", env).exit_code == 0     # creates the newcomers
    lagging = _run(project, scenario.sync, env)
    assert lagging.exit_code == 1, lagging.describe()
    rejected = rejected_keys(project, scenario.sync)
    assert set(rejected) == {r["email"] for r in newcomers} and set(rejected.values()) <= {"2008", "2009"}
    control.settings(clock_skew=120)
    final = _run(project, scenario.sync, env)
    assert final.exit_code == 0, final.describe()
    assert snapshot_keys(project, scenario.sync) == {r["email"] for r in scenario.rows + newcomers}
    assert len(control.contacts()) == len(scenario.before) + len(newcomers)
    assert_no_key_twice_in_a_request(control.requests())


def test_read_after_write_lag_mirror(project, emu, control):
    """A list add right after the contacts' creation meets contacts not visible yet (2008): the
    engine adds them again after a pause, and the list ends exactly the model."""
    env = emulator_env(emu)
    scenario = Scenario("mirror", project, control)
    scenario.prepare(env)
    control.settings(read_after_write_lag=0.5)
    outcome = _run(project, scenario.sync, env)
    assert outcome.exit_code == 0, outcome.describe()
    scenario.check()
