"""`emulator`: serve the bundled Emarsys API."""

from __future__ import annotations

import click

from . import console, main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. The inspection routes have no auth: keep it on loopback.")
@click.option("--port", default=8780, show_default=True, type=int)
@click.option("--client-id", default=None, help="OAuth client id of the sandbox API user.")
@click.option("--client-secret", default=None, help="OAuth client secret of the sandbox API user.")
@click.option("--username", default=None, help="WSSE user name of the sandbox API user.")
@click.option("--secret", default=None, help="WSSE secret of the sandbox API user.")
@click.option("--rate-limit", default=1000, show_default=True, type=int,
              help="Requests per minute per API user; 0 turns rate limiting off.")
@click.option("--store", "store_file", default=None, type=click.Path(dir_okay=False),
              help="Keep the sandbox's contacts in this JSON file across restarts.")
def emulator(host, port, client_id, client_secret, username, secret, rate_limit, store_file) -> None:
    """Serve the bundled local Emarsys API (a sandbox for trying and testing syncs)."""
    from ..emulator.app import Emulator, EmulatorConfig
    from ..emulator.server import serve_forever

    config = EmulatorConfig(rate_limit=rate_limit)
    for name, value in (("client_id", client_id), ("client_secret", client_secret),
                        ("username", username), ("secret", secret)):
        if value:
            setattr(config, name, value)
    emu = Emulator(config)
    url = f"http://{host}:{port}"
    console.print(f"Emarsys emulator on {url} (API v3 with OAuth, API v2 with WSSE)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print("[yellow]warning:[/] bound beyond loopback; /_emulator/* routes have no auth")
    console.print("Point the runner at it:")
    console.print(f"  export EMARSYS_API_URL={url}")
    console.print(f"  export EMARSYS_AUTH_URL={url}/oauth2/token")
    console.print(f"  export EMARSYS_CLIENT_ID={config.client_id}")
    console.print(f"  export EMARSYS_CLIENT_SECRET={config.client_secret}")
    console.print(f"  (or WSSE: EMARSYS_USERNAME={config.username} EMARSYS_SECRET={config.secret})")
    limit = f"{rate_limit} requests/minute per API user" if rate_limit else "off"
    console.print(f"Rate limit: {limit}. Ctrl-C stops it.")
    serve_forever(emu, host, port, store_file=store_file)
