"""A local Emarsys API: the sandbox users try syncs against and the peer of our integration tests.

It implements the contract written down in the project's Emarsys API notes (auth, fields, contacts,
reply codes, limits). `Emulator(config).app` is an ASGI app; `EmulatorThread` serves it on loopback.
"""

from .app import Emulator, EmulatorConfig
from .server import EmulatorThread

__all__ = ["Emulator", "EmulatorConfig", "EmulatorThread"]
