"""Fixtures for the Emarsys client's unit tests: the real client against the emulator in-process
(through `Emulator.sync_transport()`; over loopback while an emulator without it is installed), with
stamina's test mode so retries don't wait, and a limiter of the test's own."""

from __future__ import annotations

import pytest
import stamina

from tests.unit.emarsys.support import EmulatorHandle, in_process_emulator


@pytest.fixture(autouse=True)
def _no_retry_waits():
    # Retries still happen (up to 5 attempts), but stamina doesn't sleep between them.
    with stamina.set_testing(True, attempts=5, cap=True):
        yield


@pytest.fixture
def emu() -> EmulatorHandle:
    with in_process_emulator() as handle:
        yield handle
