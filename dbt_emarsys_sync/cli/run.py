"""`run` and `plan`: sync the selected models, or show what a run would do."""

from __future__ import annotations

import signal
import sys
import threading

import click

from . import console, dbt_options, err_console, gating_options, guard, main, parse_vars, print_json, \
    split_selection


def sync_options(func):
    """Options of `run` and `plan` beyond dbt's own."""
    options = [
        click.option("--full-refresh", is_flag=True, default=False,
                     help="Re-send every row, not only changed ones; contact lists are reconciled with the "
                          "members Emarsys really holds (under the same safety limits)."),
        click.option("--allow-mass-removal", is_flag=True, default=False,
                     help="Let a list mirror remove more than its safety.max_removal_share of the members, "
                          "or act on an empty model, in this run."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="Syncs run at once (default: the dbt profile's threads). They share one rate "
                          "limit per API user."),
        click.option("--state-schema", envvar="EMARSYS_SYNC_STATE_SCHEMA", default=None,
                     help="The warehouse schema for the runner's state (default: <target schema>_emarsys_sync)."),
        click.option("--lock-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
                     help="Seconds to wait while another run holds a sync (or the DuckDB file)."),
        click.option("--batch-size", type=click.IntRange(1, 1000), default=None,
                     help="Contacts per request (default 1000, Emarsys's maximum)."),
        click.option("--samples", type=click.IntRange(min=0), default=5, show_default=True,
                     help="Example rows shown per category: a plan's new, changed, removed and rejected "
                          "rows; a run's rejected rows in the summary."),
        click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
                     help="json: print the results (the content of target/emarsys_sync_results.json, for "
                          "a plan target/emarsys_sync_plan.json) on stdout instead of the table."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _graceful_stop() -> threading.Event | None:
    """Ctrl-C or SIGTERM (a cancelled CI job): the syncs stop at their next batch, the requests in
    flight finish, what Emarsys acknowledged is recorded and the results file is written. A second
    signal stops at once (nothing is lost either: the next run recovers the interrupted plan)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err_console.print("stopping after the requests in flight (signal again to stop at once)")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _run(dry_run: bool, project_dir, profiles_dir, target, profile, vars_, select, exclude, selector, state,
         ignore_build_results, artifacts_dir, full_refresh, allow_mass_removal, threads, state_schema,
         lock_timeout, batch_size, samples, output, dbt_cloud_run_id=None, dbt_cloud_job_id=None) -> None:
    from ..runner import RunRequest, run_syncs

    stop = _graceful_stop()
    request = RunRequest(project_dir=project_dir, profiles_dir=profiles_dir, target=target, profile=profile,
                         vars=guard(lambda: parse_vars(vars_)), select=split_selection(select),
                         exclude=split_selection(exclude),
                         selector=selector, state=state, ignore_build_results=ignore_build_results,
                         artifacts_dir=artifacts_dir, dry_run=dry_run, full_refresh=full_refresh,
                         allow_mass_removal=allow_mass_removal, threads=threads, state_schema=state_schema,
                         lock_timeout=lock_timeout, batch_size=batch_size, samples=samples, stop=stop)
    if dbt_cloud_run_id is not None or dbt_cloud_job_id is not None:
        from ..cloud.run import run_from_cli

        report = guard(lambda: run_from_cli(request, run_id=dbt_cloud_run_id, job_id=dbt_cloud_job_id,
                                            console=None if output == "json" else console))
    else:
        report = guard(lambda: run_syncs(request, None if output == "json" else console))
    if output == "json":
        print_json(report.as_dict())
    sys.exit(report.exit_code)


@main.command()
@dbt_options
@gating_options
@sync_options
@click.option("--dry-run", is_flag=True, default=False,
              help="Only plan: show what would be sent, nothing is written to Emarsys or to the state "
                   "(same as `dbt-emarsys-sync plan`).")
@click.option("--dbt-cloud-run-id", type=click.IntRange(min=1), default=None,
              help="Sync the models this dbt Cloud run built, with its artifacts (DBT_CLOUD_API_TOKEN, "
                   "DBT_CLOUD_ACCOUNT_ID, DBT_CLOUD_URL).")
@click.option("--dbt-cloud-job-id", type=click.IntRange(min=1), default=None,
              help="As --dbt-cloud-run-id, with the latest finished run of this dbt Cloud job.")
def run(dry_run, **kwargs) -> None:
    """Sync the selected models' declared syncs to Emarsys: only rows that changed since the last
    acknowledged run are sent.

    Exit codes: 0 every sync succeeded; 1 rows were rejected; 2 configuration error, nothing was sent;
    3 a sync failed; 4 some syncs were skipped because of the last dbt build. When several apply:
    2, 3, 4, 1, 0."""
    _run(dry_run, **kwargs)


@main.command()
@dbt_options
@gating_options
@sync_options
def plan(**kwargs) -> None:
    """Show what `run` would do, per sync: rows to create or update, unchanged, members to remove,
    rows that would be rejected, with sample rows. Writes nothing to Emarsys or to the state.

    The exit code is the one `run` would give (see `run --help`)."""
    _run(True, **kwargs)
