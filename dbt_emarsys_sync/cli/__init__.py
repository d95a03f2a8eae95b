"""The command line: options -> library calls -> exit codes. No sync logic lives here.

The group and the helpers every command shares are here; each area's commands are in their own
module (run.py, emulator.py, ...), registered at the bottom of this file.
"""

from __future__ import annotations

import json
import logging
import sys

import click
from rich.console import Console

from .. import __version__
from ..errors import EXIT_CONFIG, EXIT_FAILED, ConfigError, SyncError

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


def split_selection(values: tuple[str, ...]) -> tuple[str, ...]:
    """`--select "a b"` and `--select a --select b` mean the same, as in dbt."""
    return tuple(part for value in values for part in value.split())


def parse_vars(raw: str | None) -> dict:
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


def guard(action):
    """Run a command body; turn our errors into a one-line message and their exit code."""
    from ..emarsys.errors import AuthError, EmarsysConfigError, PermissionDenied
    from ..spec import SpecError

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


# Register the commands (imported for their side effect on `main`).
from . import emulator as _emulator_commands  # noqa: E402,F401
from . import run as _run_commands  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
