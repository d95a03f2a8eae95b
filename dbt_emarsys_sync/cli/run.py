"""`run`: sync the selected models."""

from __future__ import annotations

import sys

from . import console, dbt_options, guard, main, parse_vars, split_selection


@main.command()
@dbt_options
def run(project_dir, profiles_dir, target, profile, vars_, select, exclude) -> None:
    """Sync the selected models' declared syncs to Emarsys."""
    from ..runner import RunRequest, run_syncs

    request = RunRequest(project_dir=project_dir, profiles_dir=profiles_dir, target=target, profile=profile,
                         vars=parse_vars(vars_), select=split_selection(select), exclude=split_selection(exclude))
    report = guard(lambda: run_syncs(request, console))
    sys.exit(report.exit_code)
