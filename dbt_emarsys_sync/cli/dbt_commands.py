"""`validate`, `ls` / `list` and `exposures`: the declarations, checked, listed and put in dbt's lineage."""

from __future__ import annotations

import sys

import click

from . import console, dbt_options, err_console, error, guard, main, parse_vars, print_json, split_selection
from ..errors import EXIT_CONFIG, EXIT_OK, ConfigError


def _project(project_dir, profiles_dir, target, profile, vars_, selector, state):
    from ..dbt.project import DbtArgs, DbtProject

    args = DbtArgs(project_dir=project_dir, profiles_dir=profiles_dir, target=target, profile=profile,
                   vars=parse_vars(vars_), selector=selector, state=state)
    return DbtProject(args).load()


def _selected(project, select, exclude) -> set[str] | None:
    return project.select(split_selection(select), split_selection(exclude))


def _require_declarations(project, selected, select, exclude, selector) -> None:
    if project.declarations(selected):
        return
    misplaced = project.misplaced(selected)
    if misplaced:          # declared where dbt ignores it: say where, not "nothing declared"
        from ..spec import SpecError

        raise SpecError(misplaced)
    from ..runner import no_syncs_selected

    raise no_syncs_selected(project, selected, tuple(select or ()), tuple(exclude or ()), selector)


# -- validate -----------------------------------------------------------------------------------------


@main.command()
@dbt_options
@click.option("--no-emarsys", is_flag=True, default=False,
              help="Don't connect to Emarsys: check declarations and columns only (e.g. CI without "
                   "credentials).")
@click.option("--output", "-o", "output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def validate(project_dir, profiles_dir, target, profile, vars_, select, exclude, selector, state,
             no_emarsys, output) -> None:
    """Check the declarations, the models' columns and types, and the Emarsys connection and fields.

    Every problem is reported at once; exit code 2 when there is any, 0 otherwise. Nothing is sent."""
    result = guard(lambda: _validate(project_dir, profiles_dir, target, profile, vars_, select, exclude,
                                     selector, state, no_emarsys))
    problems, checked, notes = result
    if output == "json":
        print_json({"syncs": checked, "problems": [p.as_dict() for p in problems],
                    "notes": [n.as_dict() for n in notes]})
    elif problems:
        error(f"{len(problems)} problem(s) found:")
        for problem in problems:
            err_console.print(f"  {problem}", markup=False, soft_wrap=True)
        for note in notes:
            err_console.print(f"note: {note}", markup=False, soft_wrap=True)
    else:
        scope = "declarations and columns" if no_emarsys else "declarations, columns and Emarsys fields"
        console.print(f"{len(checked)} sync(s) OK ({scope}): {', '.join(checked)}", markup=False,
                      soft_wrap=True)
    sys.exit(EXIT_CONFIG if problems else EXIT_OK)


def _validate(project_dir, profiles_dir, target, profile, vars_, select, exclude, selector, state,
              no_emarsys) -> tuple[list, list[str], list]:
    """(problems, the names of the syncs checked, notes on what couldn't be checked). Every check runs
    whatever the others found: the syncs with declaration problems are checked too, as far as they
    parse (their columns and fields), so that one pass shows everything to fix."""
    from ..checks import check_syncs

    project = _project(project_dir, profiles_dir, target, profile, vars_, selector, state)
    selected = _selected(project, select, exclude)
    _require_declarations(project, selected, select, exclude, selector)
    found = project.collect(selected)
    # A declaration dbt ignores (straight under `config`) is a problem here, a warning elsewhere.
    problems = project.misplaced(selected) + found.problems
    from ..runner import runner_settings_problems
    problems += runner_settings_problems(project)      # the runner's own settings, as run checks them
    checked = [s for s in found.syncs + found.incomplete if s.spec.enabled]
    names = [s.name for s in found.syncs if s.spec.enabled]
    if no_emarsys:
        return problems + check_syncs(project, checked, None), names, found.unchecked
    from ..emarsys import EmarsysClient, EmarsysSettings, FieldCatalog
    from ..emarsys.errors import EmarsysError

    try:
        client = EmarsysClient(EmarsysSettings.from_env())
    except (ConfigError, EmarsysError) as exc:
        problems.append(_connection_problem(exc))
        return problems + check_syncs(project, checked, None), names, found.unchecked
    with client:
        catalog = None
        try:
            client.check_connection()
            # The choices of choice fields are fetched on first need, while the client is open.
            catalog = FieldCatalog.from_api(client.get_fields(), choice_loader=client.get_choices)
        except (ConfigError, EmarsysError) as exc:
            problems.append(_connection_problem(exc))
        problems += check_syncs(project, checked, catalog)
    return problems, names, found.unchecked


def _connection_problem(exc: Exception):
    from ..spec import Problem

    return Problem("", "environment", "EMARSYS_*", f"can't use the Emarsys API: {exc}")


# -- ls / list ----------------------------------------------------------------------------------------


@click.option("--output", "-o", "output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@dbt_options
def _ls(project_dir, profiles_dir, target, profile, vars_, select, exclude, selector, state, output) -> None:
    """List the declared syncs of the selected models."""
    syncs = guard(lambda: _list_syncs(project_dir, profiles_dir, target, profile, vars_, select, exclude,
                                      selector, state))
    rows = [_sync_row(s) for s in syncs]
    if output == "json":
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("sync", "model", "object", "behaviour", "key", "list", "enabled", "declared in"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["model"], row["object"], row["behaviour"],
                      f"{row['key']['column']} -> {row['key']['field']}", row["list"] or "",
                      "yes" if row["enabled"] else "no",
                      f"{row['path']}:{row['line']}" if row["line"] else row["path"])
    console.print(table)


def _list_syncs(project_dir, profiles_dir, target, profile, vars_, select, exclude, selector, state):
    project = _project(project_dir, profiles_dir, target, profile, vars_, selector, state)
    selected = _selected(project, select, exclude)
    _require_declarations(project, selected, select, exclude, selector)
    return project.syncs(selected)


def _sync_row(sync) -> dict:
    spec, model = sync.spec, sync.model
    source = sync.source
    return {
        "name": sync.name, "model": model.display_name, "unique_id": model.unique_id,
        "resource_type": model.resource_type, "relation": model.relation_name,
        "materialized": model.materialized, "object": spec.object, "behaviour": spec.behaviour,
        "key": {"column": spec.key.column, "field": spec.key.field}, "list": spec.list,
        "fields": dict(spec.fields), "enabled": spec.enabled,
        "path": source.path if source else model.yaml_path,
        "line": source.line_of(sync.key()) if source else None,
    }


main.add_command(main.command("ls")(_ls), "list")


# -- exposures ----------------------------------------------------------------------------------------


@main.command()
@dbt_options
@click.option("--path", "path", default=None, type=click.Path(dir_okay=False),
              help="The YAML file to write, relative to the project (default: "
                   "<first model path>/emarsys_exposures.yml). An existing file is overwritten only if "
                   "this command generated it.")
@click.option("--check", is_flag=True, default=False,
              help="Don't write: exit 1 (and show the difference) when the file is not up to date.")
def exposures(project_dir, profiles_dir, target, profile, vars_, select, exclude, selector, state, path,
              check) -> None:
    """Write dbt exposures for the syncs (one per sync, depending on its model), for dbt's lineage and
    `dbt build --select +exposure:emarsys_<sync>`."""
    target_file = guard(lambda: _exposure_file(project_dir, profiles_dir, target, profile, vars_, select,
                                               exclude, selector, state, path))
    if check:
        if target_file.is_current():
            console.print(f"{target_file.path} is up to date", markup=False)
            sys.exit(EXIT_OK)
        error(f"{target_file.path} is not up to date: run `dbt-emarsys-sync exposures`")
        click.echo(target_file.diff(), err=True)
        sys.exit(1)
    changed = target_file.write()
    console.print(f"{'wrote' if changed else 'unchanged:'} {target_file.path}", markup=False)


def _exposure_file(project_dir, profiles_dir, target, profile, vars_, select, exclude, selector, state, path):
    from pathlib import Path

    from ..exposures import ExposureFile, default_path, in_model_paths, path_problem, render

    project = _project(project_dir, profiles_dir, target, profile, vars_, selector, state)
    selected = _selected(project, select, exclude)
    syncs = project.syncs(selected)
    settings, problems = project.project_settings()
    if problems:
        from ..spec import SpecError

        raise SpecError(problems)
    model_paths = list(project.config.model_paths)
    file_path = (project.project_dir / path) if path else default_path(project.project_dir, model_paths)
    if not in_model_paths(file_path, project.project_dir, model_paths):
        raise ConfigError(f"{file_path} is outside the project's model paths ({', '.join(model_paths)}): "
                          "dbt would not read the exposures")
    problem = path_problem(file_path)
    if problem:
        raise ConfigError(problem)
    content = render(syncs, settings.settings.exposures, project.config.project_name)
    return ExposureFile(Path(file_path), content)
