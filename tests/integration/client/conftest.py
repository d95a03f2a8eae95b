"""Fixtures for the client's integration tests: the emulator served on a loopback port (port 0,
started and stopped per test), faults injected through its control API."""

from __future__ import annotations

import pytest
import stamina

from tests.unit.emarsys.support import EmulatorHandle, loopback_emulator


@pytest.fixture(autouse=True)
def _no_retry_waits():
    with stamina.set_testing(True, attempts=8, cap=True):
        yield


@pytest.fixture
def emu() -> EmulatorHandle:
    with loopback_emulator() as handle:
        yield handle
