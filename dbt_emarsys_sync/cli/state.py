"""`state show` and `state reset`: the runner's state in the warehouse."""

from __future__ import annotations

import sys

import click

from . import console, dbt_options, guard, main, parse_vars, print_json, split_selection


@main.group()
def state() -> None:
    """Inspect or reset what the runner keeps in the warehouse (the state schema)."""


def state_options(func):
    options = [
        click.option("--sync", "sync_names", multiple=True,
                     help="A sync by name (repeatable), also one no longer declared; not with --select, "
                          "--exclude or --selector."),
        click.option("--state-schema", envvar="EMARSYS_SYNC_STATE_SCHEMA", default=None,
                     help="The state schema (default: <target schema>_emarsys_sync)."),
        click.option("--lock-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
                     help="Seconds to wait while a run holds the sync (or the DuckDB file)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _request(project_dir, profiles_dir, target, profile, vars_, select, exclude, state_schema, lock_timeout,
             **extra):
    from ..runner import RunRequest

    return RunRequest(project_dir=project_dir, profiles_dir=profiles_dir, target=target, profile=profile,
                      vars=parse_vars(vars_), select=split_selection(select), exclude=split_selection(exclude),
                      selector=extra.get("selector"), state=extra.get("state"), state_schema=state_schema,
                      lock_timeout=lock_timeout)


def _one_choice(sync_names, kwargs) -> None:
    """--sync names the syncs outright: a dbt selection beside it would be ignored, so refuse it."""
    given = [f"--{name}" for name in ("select", "exclude", "selector") if kwargs.get(name)]
    if sync_names and given:
        raise click.UsageError(f"--sync can't be combined with {', '.join(given)}: name the syncs with "
                               "--sync, or select their models with dbt selection")


@state.command("show")
@dbt_options
@state_options
@click.option("--samples", type=click.IntRange(min=0), default=5, show_default=True,
              help="Rejected rows shown per sync.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def show(sync_names, samples, output, **kwargs) -> None:
    """Per sync: acknowledged rows, rejected rows (by code, with samples), the lock, recent runs."""
    from ..runner import show_state

    _one_choice(sync_names, kwargs)
    result = guard(lambda: show_state(_request(**kwargs), tuple(sync_names), samples))
    if output == "json":
        print_json(result)
        return
    _render(result)


@state.command("reset")
@dbt_options
@state_options
@click.option("--yes", is_flag=True, default=False, help="Don't ask for confirmation.")
def reset(sync_names, yes, **kwargs) -> None:
    """Forget what the selected syncs had sent: their next run sends every row again. A mirror sync
    also forgets its members: run it with --full-refresh afterwards to reconcile the list."""
    from ..runner import reset_state

    _one_choice(sync_names, kwargs)
    request = guard(lambda: _request(**kwargs))
    if not (sync_names or request.select or request.exclude):
        raise click.UsageError("say which syncs to reset: --select (dbt selection) or --sync NAME")

    def confirm(names: list[str]) -> None:
        click.confirm(f"Reset the state of {len(names)} sync(s): {', '.join(names)}? Their next run sends "
                      "every row again", abort=True)

    result = guard(lambda: reset_state(request, tuple(sync_names), confirm=None if yes else confirm))
    for item in result["syncs"]:
        console.print(f"{item['sync']}: forgot {item['snapshot_rows']} acknowledged and "
                      f"{item['rejected_rows']} rejected rows", markup=False, highlight=False)
    sys.exit(0)


def _render(result: dict) -> None:
    from rich.table import Table

    if not result.get("exists", True):
        console.print(f"No state yet: schema {result['state_schema']} does not exist (it is created by the "
                      "first run).", markup=False)
        return
    table = Table(title=f"Sync state in {result['state_schema']}")
    for col in ("sync", "acknowledged rows", "last acknowledged", "Emarsys", "rejected rows", "locked by",
                "last run"):
        table.add_column(col, justify="right" if "rows" in col else "left")
    for item in result["syncs"]:
        lock = item.get("lock")
        runs = item.get("recent_runs") or []
        last = f"{runs[0]['status']} {runs[0]['started_at']:%Y-%m-%d %H:%M}" if runs and runs[0].get("started_at") \
            else "-"
        emarsys = item.get("emarsys")
        table.add_row(item["sync"], str(item.get("snapshot_rows", 0)), str(item.get("last_acknowledged_at") or "-"),
                      f"{emarsys['api']} ({emarsys['api_user']})" if emarsys else "-",
                      str(item.get("rejected_rows", 0)),
                      f"{lock['run_id']} (pid {lock['pid']} on {lock['host']})" if lock else "-", last)
    console.print(table)
    for item in result["syncs"]:
        if item.get("pending_plans"):
            console.print(f"{item['sync']}: an interrupted run's plan is pending ({', '.join(item['pending_plans'])}); "
                          "the next run keeps what it had sent", markup=False)
        if item.get("rejected_samples"):
            codes = ", ".join(f"{c}: {n}" for c, n in item["rejected_by_code"].items())
            console.print(f"{item['sync']}: rejected rows ({codes}), for example:", markup=False)
            for sample in item["rejected_samples"]:
                rows = f", {sample['rows']} rows" if sample.get("rows", 1) > 1 else ""
                console.print(f"  - {sample['key']}: [{sample['code']}] {sample['message']} (run {sample['run_id']}"
                              f"{rows})", markup=False, highlight=False)
