"""A local Emarsys API: the sandbox users try syncs against and the peer of our integration tests.

It implements the contract written down in the project's Emarsys API notes (emarsys-api.md): both
auth schemes, fields and choices, contacts, contact lists, reply codes, limits, rate limiting, plus
scriptable faults and a control API (`/_emulator/*`) to seed, reset and inspect it.

Three ways to run it:

- Over HTTP on loopback, in a background thread (integration tests, the demo, benchmarks)::

      with EmulatorThread(EmulatorConfig(rate_limit=0)) as emu:
          httpx.get(f"{emu.url}/_emulator/health")       # emu.token_url, emu.emulator

- From the command line: ``dbt-emarsys-sync emulator --port 8780`` (see ``--help``).

- In-process, no sockets (unit tests): the ASGI app is ``Emulator(config).app``::

      emu = Emulator(EmulatorConfig())
      client = httpx.Client(transport=emu.sync_transport(), base_url="http://emarsys")
      aclient = httpx.AsyncClient(transport=emu.async_transport(), base_url="http://emarsys")

  The in-process transports map a dropped connection to ``httpx.RemoteProtocolError`` and honour
  the request's read timeout with ``httpx.ReadTimeout`` (the app goes on), as a socket would.
"""

from .app import Emulator
from .config import EmulatorConfig
from .server import EmulatorThread
from .settings import Settings
from .store import StoreOptions

__all__ = ["Emulator", "EmulatorConfig", "EmulatorThread", "Settings", "StoreOptions"]
