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


class MultiOption(click.Option):
    """An option that takes every following word up to the next option, as dbt's `--select a b`.

    The behaviour of dbt's own `dbt.cli.options.MultiOption`, which can't be imported without
    importing all of dbt (two seconds on every command, `--help` included)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        self._previous_process = None
        self._own_parser = None

    def add_to_parser(self, parser, ctx):
        def process(value: str, state) -> None:
            words = [value]
            while state.rargs and not any(state.rargs[0].startswith(p) for p in self._own_parser.prefixes):
                words.append(state.rargs.pop(0))
            self._previous_process(tuple(words), state)

        result = super().add_to_parser(parser, ctx)
        for name in self.opts:
            own = parser._long_opt.get(name) or parser._short_opt.get(name)
            if own is not None:
                self._own_parser, self._previous_process = own, own.process
                own.process = process
                break
        return result

    def type_cast_value(self, ctx, value):
        def flatten(data):
            if isinstance(data, (tuple, list)):
                for item in data:
                    yield from flatten(item)
            else:
                yield data

        return tuple(flatten(value)) if value else ()


def dbt_options(func):
    """dbt's own flag names and environment variables.

    `--select a b` works as in dbt. `--selector` and `--state` reach only commands whose function
    takes `selector` and `state`; elsewhere they are refused, not ignored."""
    options = [
        click.option("--project-dir", envvar="DBT_PROJECT_DIR", default=None,
                     help="The dbt project (default: the current directory)."),
        click.option("--profiles-dir", envvar="DBT_PROFILES_DIR", default=None,
                     help="Where profiles.yml is (default: the project, then ~/.dbt)."),
        click.option("--target", "-t", envvar="DBT_TARGET", default=None, help="The dbt target."),
        click.option("--profile", default=None, help="The dbt profile (default: the project's)."),
        click.option("--vars", "vars_", default=None, help="dbt vars, as YAML or JSON."),
        click.option("--select", "-s", cls=MultiOption,
                     help="dbt selection syntax (models to sync): tag:, path:, +model, config.meta..., "
                          "state:modified+, result:success..."),
        click.option("--exclude", cls=MultiOption,
                     help="dbt selection syntax (models to leave out)."),
        click.option("--selector", default=None, help="A selector of the project's selectors.yml."),
        click.option("--state", envvar="DBT_STATE", default=None,
                     type=click.Path(file_okay=False), help="Artifacts to compare with, for state: and "
                                                            "result: selection (as dbt's --state)."),
    ]
    func = _accepting_new_flags(func, ("selector", "state"))
    for option in reversed(options):
        func = option(func)
    return func


def _accepting_new_flags(func, names: tuple[str, ...]):
    """Pass `names` only to commands that take them; refuse them (if given) on the others."""
    import functools
    import inspect

    params = inspect.signature(func).parameters
    if all(n in params for n in names) or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return func

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        for name in names:
            value = kwargs.pop(name, None)
            if name not in params and value:
                raise click.UsageError(f"--{name} is not supported by this command")
            if name in params:
                kwargs[name] = value
        return func(*args, **kwargs)

    return wrapper


def gating_options(func):
    """Which build results decide what may sync (dbt/gating.py)."""
    options = [
        click.option("--ignore-build-results", is_flag=True, default=False,
                     help="Sync every selected model even when its last build failed, was skipped or "
                          "its tests failed (run_results.json is not read)."),
        click.option("--artifacts-dir", default=None, type=click.Path(file_okay=False),
                     help="Read manifest.json and run_results.json from here instead of the project's "
                          "target/ (artifacts of a build made elsewhere)."),
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


class ConsoleLogFormatter(logging.Formatter):
    """At the default level a warning reads as the command's other messages do ("warning: ..."); with
    --log-level info or debug every line carries its time, level and logger, to follow a run."""

    def __init__(self, detailed: bool):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s" if detailed else None)
        self.detailed = detailed

    def format(self, record: logging.LogRecord) -> str:
        if self.detailed:
            return super().format(record)
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            # The cause in one line; the traceback is for --log-level debug.
            exc = record.exc_info[1]
            text += f" ({type(exc).__name__}: {exc})"
        return text


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleLogFormatter(detailed=level.upper() in ("DEBUG", "INFO")))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
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
    from ..emarsys.errors import AuthError, EmarsysConfigError, EmarsysError, PermissionDenied
    from ..spec import SpecError

    try:
        return action()
    except SpecError as exc:
        error(f"{len(exc.problems)} problem(s) in the sync declarations:")
        for problem in exc.problems:
            err_console.print(f"  {problem}", markup=False, soft_wrap=True)
        sys.exit(EXIT_CONFIG)
    except (ConfigError, EmarsysConfigError, AuthError, PermissionDenied) as exc:
        error(str(exc))
        sys.exit(EXIT_CONFIG)
    except SyncError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except EmarsysError as exc:
        # Emarsys failed outside a sync (the field catalogue, the connection check), after retries.
        error(str(exc))
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(EXIT_FAILED)
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception:
        # A defect, not a user's mistake: show where it happened, and exit 3 (a sync failed), not the
        # 1 Python would give, which scripts read as "rows were rejected". The state only ever
        # holds what Emarsys acknowledged, so the next run starts from there.
        import traceback

        traceback.print_exc()
        error("unexpected internal error (traceback above); please report it. What Emarsys acknowledged "
              "before it is kept in the state.")
        sys.exit(EXIT_FAILED)


def error(message: str) -> None:
    from rich.text import Text

    # soft_wrap: one problem per line, whatever the width (CI logs, grep).
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# Register the commands (imported for their side effect on `main`).
from . import emulator as _emulator_commands  # noqa: E402,F401
from . import run as _run_commands  # noqa: E402,F401
from . import serve as _serve_commands  # noqa: E402,F401
from . import dbt_commands as _dbt_commands  # noqa: E402,F401
from . import state as _state_commands  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
