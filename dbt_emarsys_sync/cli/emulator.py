"""`emulator`: serve the bundled Emarsys API."""

from __future__ import annotations

import json

import click

from . import console, main

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _parse_setting(text: str) -> tuple[str, object]:
    """`NAME=VALUE` with VALUE read as a YAML scalar (true, 2.5, sliding)."""
    import yaml

    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return name.strip().replace("-", "_"), value


def _parse_fault(text: str) -> dict:
    try:
        fault = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON ({err}): {text!r}", param_hint="--fault") from None
    if not isinstance(fault, dict):
        raise click.BadParameter('a fault is a JSON object, e.g. {"type": "status", "status": 503}',
                                 param_hint="--fault")
    return fault


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. The /_emulator/* routes have no auth: keep it on loopback.")
@click.option("--port", default=8780, show_default=True, type=click.IntRange(0, 65535),
              help="0: a free port, printed at start.")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="A YAML or JSON file with any emulator option: credentials, users, custom_fields, "
                   "faults, seed and every setting (flags below override it).")
@click.option("--client-id", default=None, help="OAuth client id of the sandbox API user.")
@click.option("--client-secret", default=None, help="OAuth client secret of the sandbox API user.")
@click.option("--username", default=None, help="WSSE user name of the sandbox API user.")
@click.option("--secret", default=None, help="WSSE secret of the sandbox API user.")
@click.option("--rate-limit", default=None, type=click.IntRange(min=0),
              help="Requests per minute per API user; 0 turns rate limiting off.  [default: 1000]")
@click.option("--token-ttl", default=None, type=click.IntRange(min=1),
              help="Lifetime of OAuth tokens in seconds (expires_in).  [default: 3600]")
@click.option("--read-after-write-lag", default=None, type=click.FloatRange(min=0),
              help="Seconds a new contact stays invisible to reads.  [default: 0]")
@click.option("--clock-skew", default=None, type=float,
              help="Seconds the server's clock runs ahead (negative: behind).  [default: 0]")
@click.option("--truncate-text/--reject-long-text", default=None,
              help="Cut over-length text instead of rejecting the contact (2007).  [default: reject]")
@click.option("--email-case-sensitive/--email-case-insensitive", default=None,
              help="How email keys match.  [default: case-sensitive]")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="Any other setting, e.g. --set duplicate_keys_in_batch=last_wins (repeatable).")
@click.option("--fault", "faults", multiple=True, metavar="JSON",
              help='A fault pending at start, e.g. --fault \'{"type": "status", "status": 503, '
                   '"count": 2}\' (repeatable).')
@click.option("--store", "store_file", default=None, type=click.Path(dir_okay=False),
              help="Keep the sandbox's contacts and contact lists in this JSON file across restarts.")
def emulator(host, port, config_file, client_id, client_secret, username, secret, rate_limit, token_ttl,
             read_after_write_lag, clock_skew, truncate_text, email_case_sensitive, settings, faults,
             store_file) -> None:
    """Serve the bundled local Emarsys API (a sandbox for trying and testing syncs)."""
    from ..emulator.app import Emulator
    from ..emulator.config import EmulatorConfig, load_config_file
    from ..emulator.server import bind_socket, check_store_writable, load_store, serve_forever

    options: dict = {}
    source = "command line"
    try:
        if config_file:
            source = config_file
            options = load_config_file(config_file)
            if not isinstance(options, dict):
                raise ValueError(f"{config_file}: the top level must be a mapping of option -> value")
        flags = {"client_id": client_id, "client_secret": client_secret, "username": username,
                 "secret": secret, "rate_limit": rate_limit, "token_ttl": token_ttl,
                 "read_after_write_lag": read_after_write_lag, "clock_skew": clock_skew,
                 "truncate_text": truncate_text, "email_case_sensitive": email_case_sensitive}
        options.update({k: v for k, v in flags.items() if v is not None})
        options.update(dict(_parse_setting(s) for s in settings))
        if faults:
            options["faults"] = list(options.get("faults") or []) + [_parse_fault(f) for f in faults]
        config = EmulatorConfig.from_mapping(options, source=source)
        emu = Emulator(config)
        load_store(emu, store_file)
        check_store_writable(store_file)    # found now, not at shutdown with the sandbox's data lost
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        sock = bind_socket(host, port)
    except OSError as err:
        raise click.UsageError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    port = sock.getsockname()[1]   # --port 0 picks a free port: say which

    url = f"http://{host}:{port}"
    console.print(f"Emarsys emulator on {url} (API v3 with OAuth, API v2 with WSSE)")
    if host not in _LOOPBACK:
        console.print("[yellow]warning:[/] bound beyond loopback; /_emulator/* routes have no auth")
    console.print("Point the runner at it:")
    console.print(f"  export EMARSYS_API_URL={url}")
    console.print(f"  export EMARSYS_AUTH_URL={url}/oauth2/token")
    console.print(f"  export EMARSYS_CLIENT_ID={config.client_id}")
    console.print(f"  export EMARSYS_CLIENT_SECRET={config.client_secret}")
    console.print(f"  (or WSSE: EMARSYS_USERNAME={config.username} EMARSYS_SECRET={config.secret})")
    others = [u["name"] for u in config.users]
    if others:
        console.print(f"Further API users (from the config): {', '.join(others)}")
    limit = f"{config.rate_limit} requests/minute per API user" if config.rate_limit else "off"
    console.print(f"Rate limit: {limit}. Control API: {url}/_emulator/. Ctrl-C stops it.")
    serve_forever(emu, host, port, store_file=store_file, sock=sock, store_loaded=True)
