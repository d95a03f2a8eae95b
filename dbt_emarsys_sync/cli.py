"""The command line: options -> library calls -> exit codes. No sync logic lives here."""

from __future__ import annotations

import json
import logging
import sys

import click
from rich.console import Console

from . import __version__
from .errors import EXIT_CONFIG, EXIT_FAILED, ConfigError, SyncError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
if not console.is_terminal:
    console.width = 160  # logs and CI: don't squeeze the summary table into 80 columns


def dbt_options(func):
    """dbt's own flag names and environment variables."""
    options = [
        click.option("--project-dir", envvar="DBT_PROJECT_DIR", default=None,
                     help="The dbt project (default: the current directory)."),
        click.option("--profiles-dir", envvar="DBT_PROFILES_DIR", default=None,
                     help="Where profiles.yml is (default: the project, then ~/.dbt)."),
        click.option("--target", "-t", envvar="DBT_TARGET", default=None, help="The dbt target."),
        click.option("--profile", default=None, help="The dbt profile (default: the project's)."),
        click.option("--vars", "vars_", default=None, help="dbt vars, as YAML or JSON."),
        click.option("--select", "-s", multiple=True, help="dbt selection syntax (models to sync)."),
        click.option("--exclude", multiple=True, help="dbt selection syntax (models to leave out)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    """`--select "a b"` and `--select a --select b` mean the same, as in dbt."""
    return tuple(part for value in values for part in value.split())


def _vars(raw: str | None) -> dict:
    if not raw:
        return {}
    import yaml

    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--vars is not valid YAML: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError("--vars must be a mapping, e.g. '{key: value}'")
    return parsed


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO; keep that for --log-level debug.
    if level.upper() != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dbt-emarsys-sync")
@click.option("--log-level", default="warning", envvar="EMARSYS_SYNC_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log detail on stderr (info shows every wait and retry).")
def main(log_level: str) -> None:
    """Sync dbt models to SAP Emarsys, as declared in each model's config.meta.emarsys."""
    _setup_logging(log_level)


@main.command()
@dbt_options
def run(project_dir, profiles_dir, target, profile, vars_, select, exclude) -> None:
    """Sync the selected models' declared syncs to Emarsys."""
    from .runner import RunRequest, run_syncs

    request = RunRequest(project_dir=project_dir, profiles_dir=profiles_dir, target=target, profile=profile,
                         vars=_vars(vars_), select=_split(select), exclude=_split(exclude))
    report = _guard(lambda: run_syncs(request, console))
    sys.exit(report.exit_code)


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
    from .emulator.app import Emulator, EmulatorConfig
    from .emulator.server import serve_forever

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


def _guard(action):
    """Run a command body; turn our errors into a one-line message and their exit code."""
    from .emarsys.errors import AuthError, EmarsysConfigError, PermissionDenied
    from .spec import SpecError

    try:
        return action()
    except SpecError as exc:
        error(f"{len(exc.problems)} problem(s) in the sync declarations:")
        for problem in exc.problems:
            err_console.print(f"  {problem}", markup=False)
        sys.exit(EXIT_CONFIG)
    except (ConfigError, EmarsysConfigError, AuthError, PermissionDenied) as exc:
        error(str(exc))
        sys.exit(EXIT_CONFIG)
    except SyncError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(EXIT_FAILED)


def error(message: str) -> None:
    from rich.text import Text

    err_console.print(Text.assemble(("error: ", "bold red"), message))


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


if __name__ == "__main__":  # pragma: no cover
    main()
