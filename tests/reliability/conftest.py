"""Fixtures of the reliability suite (see README.md in this directory).

Long variants are marked `slow` and run only on demand: `pytest -m slow tests/reliability` or
`RELIABILITY_FULL=1 pytest -m reliability`. CI (`./dev.sh test`) runs the shortened variants.
"""

from __future__ import annotations

import os

import pytest
import stamina

from dbt_emarsys_sync.emulator import EmulatorConfig, EmulatorThread

from tests.reliability.support import Control, build_project, copy_project

FULL = os.environ.get("RELIABILITY_FULL", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    """`slow` variants run when asked for (`-m slow`, or RELIABILITY_FULL=1), never by default."""
    asked = FULL or "slow" in (config.getoption("-m") or "")
    if asked:
        return
    skip = pytest.mark.skip(reason="long variant: run with `-m slow` or RELIABILITY_FULL=1 "
                                   "(the shortened variant runs by default)")
    for item in items:
        if "slow" in item.keywords and "tests/reliability" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def built_project(tmp_path_factory):
    """The fixture project, built once per test process."""
    return build_project(tmp_path_factory.mktemp("reliability") / "project")


@pytest.fixture
def project(built_project, tmp_path):
    """A private copy of the built fixture project (its DuckDB file, manifest and run results)."""
    return copy_project(built_project, tmp_path / "project")


@pytest.fixture
def emu():
    """The emulator on a loopback port, no rate limit (the load scenarios set their own)."""
    with EmulatorThread(EmulatorConfig(rate_limit=0)) as thread:
        yield thread


@pytest.fixture
def control(emu):
    ctl = Control(emu)
    yield ctl
    ctl.close()


@pytest.fixture
def fast_retries():
    """stamina's test mode: the client retries without backoff waits (a 429 still holds requests
    until its X-RateLimit-Reset, which the scenarios keep short), at most 4 attempts per request (the
    client's policy: 8) so that storms outlasting the retries stay short too."""
    with stamina.set_testing(True, attempts=4, cap=True):
        yield
